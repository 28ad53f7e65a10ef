package Bench::CPairs;

# The C baselines: a flock(2) pair and an F_OFD_SETLK pair, compiled at
# bench time with cc. The "dup" kinds also make and close a close-on-exec
# duplicate around each pair, as a guard on a caller's handle must (DESIGN:
# Ownership): the least a guard can cost. They are and run as a co-process, so their batches take part
# in the same interleaved rounds as the Perl loops. A batch is one request
# over a pipe ("N\n" -> "done SECONDS\n"), answered with the CPU time the
# co-process spent on it, so that it compares with the process CPU time of
# the Perl loops.

use strict;
use warnings;

use Exporter 'import';
use IPC::Open2 qw(open2);

our @EXPORT_OK = qw(c_pair);

my $SOURCE = <<'C';
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static int ofd_pair(int fd, off_t start, off_t len) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (fcntl(fd, F_OFD_SETLK, &fl) != 0) return -1;
  fl.l_type = F_UNLCK;
  return fcntl(fd, F_OFD_SETLK, &fl);
}

/* One pair of KIND on fd, or on a close-on-exec duplicate of it made and
 * closed around the pair. */
static int pair(int fd, int ofd, int dup, off_t start, off_t len) {
  const int on = dup ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : fd;
  if (on < 0) return -1;
  const int rc = ofd ? ofd_pair(on, start, len)
                     : (flock(on, LOCK_EX) || flock(on, LOCK_UN));
  if (dup && close(on) != 0) return -1;
  return rc;
}

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* pairs PATH flock|ofd|flock-dup|ofd-dup [START LEN]: reads a count per
 * line, runs that many pairs, answers "done" and the CPU seconds they took. */
int main(int argc, char **argv) {
  if (argc < 3) return 64;
  const int fd = open(argv[1], O_RDWR);
  if (fd < 0) return 66;
  const int ofd = strncmp(argv[2], "ofd", 3) == 0;
  const int dup = strstr(argv[2], "-dup") != NULL;
  const off_t start = argc > 3 ? atoll(argv[3]) : 0;
  const off_t len = argc > 4 ? atoll(argv[4]) : 0;
  char line[64];
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin)) {
    const long n = atol(line);
    const double start = cpu_seconds();
    for (long i = 0; i < n; i++) {
      if (pair(fd, ofd, dup, start, len) != 0) {
        perror("pair");
        return 1;
      }
    }
    printf("done %.9f\n", cpu_seconds() - start);
  }
  return 0;
}
C

my %compiled;

# Compiles the program into DIR once; returns its path, or undef without cc.
sub _program {
    my ($dir) = @_;
    return $compiled{$dir} if exists $compiled{$dir};
    my $src = "$dir/c_pairs.c";
    open(my $fh, '>', $src) or return $compiled{$dir} = undef;
    print {$fh} $SOURCE;
    close $fh or return $compiled{$dir} = undef;
    my $ok = !system('cc', '-O2', '-o', "$dir/c_pairs", $src);
    return $compiled{$dir} = $ok ? "$dir/c_pairs" : undef;
}

# A bench code ref (called with a count) running that many C pairs on PATH
# and returning the CPU seconds they took:
# KIND 'flock' or 'flock-dup', or 'ofd' or 'ofd-dup' with START and LEN. Undef where cc is missing.
sub c_pair {
    my ($dir, $path, $kind, @range) = @_;
    my $program = _program($dir) or return;
    my $pid = open2(my $from, my $to, $program, $path, $kind, @range);
    my $keep = [ $pid, $from, $to ];    # the co-process lives as long as the code ref
    return sub {
        my ($n) = @_;
        my (undef, $out, $in) = @$keep;
        print {$in} "$n\n";
        $in->flush;
        my $reply = <$out>;
        die "C $kind pairs failed\n" unless defined $reply && $reply =~ /\Adone ([0-9.]+)\n\z/;
        return $1;    # its CPU seconds
    };
}

1;
