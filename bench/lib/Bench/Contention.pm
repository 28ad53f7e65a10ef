package Bench::Contention;

# Contention scaling: N processes, each with its own handle, increment a
# counter kept in one file under one lock until a common deadline. The
# result is the total number of increments per second; the counter must
# equal the sum of what the workers report.

use strict;
use warnings;

use Exporter 'import';
use Fcntl qw(:flock SEEK_SET);
use File::Locker qw(lock_file);
use IO::Handle;
use POSIX ();
use Time::HiRes ();

use Bench::Util qw(now);

our @EXPORT_OK = qw(contention_variants run_contention);

# name => code ref: (handle, critical section) -> runs the section locked.
sub contention_variants {
    return (
        [ 'CORE::flock' => sub {
            CORE::flock($_[0], LOCK_EX) or die "flock: $!\n";
            $_[1]->();
            CORE::flock($_[0], LOCK_UN) or die "flock: $!\n";
        } ],
        [ 'File::Locker::flock' => sub {
            File::Locker::flock($_[0], LOCK_EX) or die "flock: $!\n";
            $_[1]->();
            File::Locker::flock($_[0], LOCK_UN) or die "flock: $!\n";
        } ],
        [ 'File::Locker::flock, TIMEOUT 10' => sub {
            File::Locker::flock($_[0], LOCK_EX, 10) or die "flock: $!\n";
            $_[1]->();
            File::Locker::flock($_[0], LOCK_UN) or die "flock: $!\n";
        } ],
        [ 'lock_file($fh) + release' => sub {
            my $guard = lock_file($_[0], LOCK_EX) or die "lock_file: $!\n";
            $_[1]->();
            $guard->release;
        } ],
    );
}

sub _read_counter {
    my ($fh) = @_;
    sysseek($fh, 0, SEEK_SET) or die "seek: $!\n";
    my $got = sysread($fh, my $buf, 32) // die "read: $!\n";
    return $got && $buf =~ /^(\d+)/ ? $1 : 0;
}

sub _worker {
    my ($with_lock, $path, $start, $stop) = @_;
    open(my $fh, '+<', $path) or die "open $path: $!\n";
    my $increment = sub {
        my $value = _read_counter($fh) + 1;
        sysseek($fh, 0, SEEK_SET) or die "seek: $!\n";
        syswrite($fh, sprintf("%-20d\n", $value)) == 21 or die "write: $!\n";
    };
    my $wait = $start - now();
    Time::HiRes::sleep($wait) if $wait > 0;
    my $count = 0;
    while (now() < $stop) {
        $with_lock->($fh, $increment);
        ++$count;
    }
    return $count;
}

# Runs PROCS workers of one variant for SECONDS; returns (increments per
# second, whether the counter matched the workers' total).
sub run_contention {
    my ($with_lock, $path, $procs, $seconds) = @_;
    open(my $init, '>', $path) or die "open $path: $!\n";
    close $init;
    pipe(my $r, my $w) or die "pipe: $!\n";
    $w->autoflush(1);
    my $start = now() + 0.05 + 0.005 * $procs;    # after every fork is done
    my $stop  = $start + $seconds;
    my @pids;
    for (1 .. $procs) {
        my $pid = fork // die "fork: $!\n";
        if ($pid == 0) {
            close $r;
            my $count = eval { _worker($with_lock, $path, $start, $stop) };
            print STDERR $@ unless defined $count;
            print {$w} ($count // -1), "\n";
            POSIX::_exit(defined $count ? 0 : 1);
        }
        push @pids, $pid;
    }
    close $w;
    my $total = 0;
    while (my $line = <$r>) {
        die "contention worker failed\n" if $line < 0;
        $total += $line;
    }
    for my $pid (@pids) {
        waitpid($pid, 0);
        die "contention worker failed\n" if $?;
    }
    open(my $fh, '<', $path) or die "open $path: $!\n";
    my $counter = _read_counter($fh);
    return ($total / $seconds, $counter == $total);
}

1;
