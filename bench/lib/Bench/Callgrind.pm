package Bench::Callgrind;

# Instructions per pair, counted by valgrind's callgrind: a measure that
# does not move with the load of the machine, so a change can be judged on
# a busy 2-core box where the timing ratios wander by several percent.
#
# Each loop runs in a fresh perl twice, with N and 3N iterations; the
# difference of the two totals divided by 2N is the cost of one iteration,
# start-up and compilation cancelled out. The C pairs are compiled at bench
# time with cc and counted the same way. Start-up is counted whole, with
# File::Locker laid out as installed (see Bench::Startup).

use strict;
use warnings;

use Exporter 'import';
use Bench::Startup ();

our @EXPORT_OK = qw(have_callgrind callgrind_table);

my $ITERATIONS = 1000;

sub have_callgrind {
    return !system('valgrind --version >/dev/null 2>&1');
}

# The instructions callgrind counts for one command (argv).
sub instructions {
    my (@argv) = @_;
    my $out = `valgrind --tool=callgrind --callgrind-out-file=/dev/null @{[ join ' ', map { quotemeta } @argv ]} 2>&1`;
    $out =~ /Collected\s*:\s*(\d+)/ or die "callgrind: no count for @argv:\n$out";
    return $1;
}

sub per_iteration {
    my ($make_argv) = @_;
    my $once   = instructions(@{ $make_argv->($ITERATIONS) });
    my $thrice = instructions(@{ $make_argv->(3 * $ITERATIONS) });
    return ($thrice - $once) / (2 * $ITERATIONS);
}

my $C_PAIRS = <<'C';
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
  long n = atol(argv[3]);
  if (fd < 0) return 2;
  for (long i = 0; i < n; i++) {
    if (strcmp(argv[2], "flock") == 0) {
      if (flock(fd, LOCK_EX) || flock(fd, LOCK_UN)) return 1;
    } else {
      struct flock fl;
      memset(&fl, 0, sizeof fl);
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = 0;
      fl.l_len = 512;
      if (fcntl(fd, F_OFD_SETLK, &fl)) return 1;
      fl.l_type = F_UNLCK;
      if (fcntl(fd, F_OFD_SETLK, &fl)) return 1;
    }
  }
  return 0;
}
C

# Compiles the C pairs into DIR; returns the program, or undef.
sub c_pairs {
    my ($dir) = @_;
    open(my $fh, '>', "$dir/pairs.c") or return;
    print {$fh} $C_PAIRS;
    close $fh or return;
    return system('cc', '-O2', '-o', "$dir/pairs", "$dir/pairs.c") ? undef : "$dir/pairs";
}

# A table of instructions per pair, and the ratios of interest as a hash.
sub callgrind_table {
    my ($dir, $lock_file) = @_;
    my $inst = Bench::Startup::installed_copy("$dir/cg-installed") or return;
    my $perl = sub {
        my ($code) = @_;
        return sub {
            [ $^X, "-I$inst", '-MFile::Locker=:flock,flock,lock_file,lock_range', '-e',
              "open(my \$fh, '+<', \$ARGV[0]) or die; for (1 .. \$ARGV[1]) { $code }",
              $lock_file, $_[0] ];
        };
    };
    my @rows;
    my %count;
    my @loops = (
        [ 'CORE::flock pair', 'CORE::flock($fh, LOCK_EX); CORE::flock($fh, LOCK_UN)' ],
        [ 'File::Locker::flock pair', 'flock($fh, LOCK_EX); flock($fh, LOCK_UN)' ],
        [ 'flock pair, TIMEOUT 10', 'flock($fh, LOCK_EX, 10); flock($fh, LOCK_UN)' ],
        [ 'lock_file($fh) + scope exit', 'my $g = lock_file($fh, LOCK_EX)' ],
        [ 'lock_range($fh, EX, 0, 512) + scope exit', 'my $g = lock_range($fh, LOCK_EX, 0, 512)' ],
    );
    for my $loop (@loops) {
        $count{ $loop->[0] } = per_iteration($perl->($loop->[1]));
    }
    if (my $c = c_pairs($dir)) {
        $count{'C flock pair'} = per_iteration(sub { [ $c, $lock_file, 'flock', $_[0] ] });
        $count{'C F_OFD_SETLK pair'} = per_iteration(sub { [ $c, $lock_file, 'ofd', $_[0] ] });
    }
    $count{'perl -MFcntl -e1'}        = instructions($^X, '-MFcntl', '-e1');
    $count{'perl -MFile::Locker -e1'} = instructions($^X, "-I$inst", '-MFile::Locker', '-e1');
    my @order = ((map { $_->[0] } @loops), 'C flock pair', 'C F_OFD_SETLK pair', 'perl -MFcntl -e1',
        'perl -MFile::Locker -e1');
    my $text = "Instructions (callgrind, user space only: system calls count as the instructions"
      . " that make them)\n";
    for my $name (@order) {
        next unless defined $count{$name};
        $text .= sprintf("  %-45s %12.0f\n", $name, $count{$name});
    }
    my $ratio = sub { my ($a, $b) = @_; defined $count{$a} && $count{$b} ? $count{$a} / $count{$b} : undef };
    my %ratios = (
        flock     => $ratio->('File::Locker::flock pair', 'CORE::flock pair'),
        startup   => $ratio->('perl -MFile::Locker -e1', 'perl -MFcntl -e1'),
    );
    $text .= sprintf("  ratio %-39s %12.3f\n", "$_ (instructions)", $ratios{$_})
      for grep { defined $ratios{$_} } sort keys %ratios;
    return ($text . "\n", \%ratios);
}

1;
