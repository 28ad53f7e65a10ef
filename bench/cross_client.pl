#!/usr/bin/env perl
# Locking across two clients of a shared filesystem (LOCKER_TEST_DIRS=A:B,
# two mounts of one volume; .ci/gluster provides two GlusterFS clients):
#
#   - cost: uncontended lock + unlock through mount A, beside the same on a
#     local directory, for CORE::flock and File::Locker's calls, with and
#     without coherent => 1;
#   - hand-off: a holder through one mount unlocks, a waiter through the
#     other mount's lock call returns; roles alternate between A and B.
#
#   perl -Mblib bench/cross_client.pl      (BENCH_QUICK=1: shorter)
#
# A report; exits 0 when LOCKER_TEST_DIRS is unset (saying so), non-zero
# only if something breaks.
#
# The waiter cannot be seen waiting on these filesystems (/proc/locks does
# not show their locks), so the holder keeps the lock a random 2-5 ms past
# the waiter's "about to lock" before it unlocks; the latency counts from
# the unlock call.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Fcntl qw(:flock SEEK_SET);
use File::Locker qw(lock_file lock_range);
use File::Temp qw(tempdir);
use IO::Handle;
use POSIX ();
use Time::HiRes ();

use Bench::Util qw(now scaled median percentile format_table fmt_time);

$| = 1;
my ($A, $B) = split /:/, $ENV{LOCKER_TEST_DIRS} // '';
unless ($A && $B && -d $A && -d $B) {
    print "cross-client bench: skipped (set LOCKER_TEST_DIRS=A:B, two mounts of one volume)\n";
    exit 0;
}
my $sub   = tempdir('locker-bench-XXXXXX', DIR => $A, CLEANUP => 1);
my $name  = (split m{/}, $sub)[-1];
my $local = tempdir('locker-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);
$SIG{INT} = $SIG{TERM} = sub { die "interrupted\n" };

sub make_file {
    my ($dir, $file) = @_;
    open my $fh, '>', "$dir/$file" or die "create $dir/$file: $!\n";
    print {$fh} "x" x 64;
    close $fh or die "close: $!\n";
    return "$dir/$file";
}

# --- cost ------------------------------------------------------------------

my @pairs = (
    [ 'CORE::flock', sub { CORE::flock($_[0], LOCK_EX) or die; CORE::flock($_[0], LOCK_UN) } ],
    [ 'File::Locker::flock',
      sub { File::Locker::flock($_[0], LOCK_EX) or die; File::Locker::flock($_[0], LOCK_UN) } ],
    [ 'lock_file($fh) + release', sub { (lock_file($_[0], LOCK_EX) or die)->release } ],
    [ 'lock_file($fh, coherent => 1)', sub { (lock_file($_[0], LOCK_EX, coherent => 1) or die)->release } ],
    [ 'lock_range($fh, 0, 8) + release', sub { (lock_range($_[0], LOCK_EX, 0, 8) or die)->release } ],
    [ 'lock_range(..., coherent => 1)',
      sub { (lock_range($_[0], LOCK_EX, 0, 8, coherent => 1) or die)->release } ],
);

# Median time of one pair over several batches.
sub pair_cost {
    my ($code, $fh, $n) = @_;
    my @per;
    for (1 .. scaled(7, 3)) {
        my $t0 = now();
        $code->($fh) for 1 .. $n;
        push @per, (now() - $t0) / $n;
    }
    return median(@per);
}

{
    my %fh;
    for my $where ([ local => $local ], [ shared => $sub ]) {
        my $path = make_file($where->[1], 'pairs');
        open my $fh, '+<', $path or die "open $path: $!\n";
        $fh{ $where->[0] } = $fh;
    }
    my @rows;
    for my $pair (@pairs) {
        my $local_cost  = pair_cost($pair->[1], $fh{local}, scaled(2000, 400));
        my $shared_cost = pair_cost($pair->[1], $fh{shared}, scaled(300, 60));
        push @rows, [ $pair->[0], fmt_time($local_cost), fmt_time($shared_cost),
                      sprintf('%.0fx', $shared_cost / $local_cost) ];
    }
    print format_table("Uncontended LOCK_EX + unlock on an open handle: local directory vs mount A ($A)",
        [ 'variant', 'local', 'shared mount', 'shared / local' ], @rows);
}

# --- hand-off ----------------------------------------------------------------

# One child per mount; they take turns. The holder of the turn locks, tells
# the other "go"; the other says "waiting" just before its lock call; the
# holder waits 2-5 ms, reads the clock, unlocks and sends the time; the
# waiter reads the clock when its call returns and reports the difference.
sub handoffs {
    my ($lock, $unlock, $n) = @_;
    my $file = make_file($sub, "handoff.$$." . int(rand 1e9));
    (my $file_b = $file) =~ s{^\Q$sub\E}{$B/$name};
    pipe my $ab_r, my $ab_w or die;
    pipe my $ba_r, my $ba_w or die;
    pipe my $res_r, my $res_w or die;
    $_->autoflush(1) for $ab_w, $ba_w, $res_w;
    my @kids;
    for my $side (0, 1) {
        my $pid = fork // die "fork: $!\n";
        if (!$pid) {
            my ($path, $in, $out) = $side ? ($file_b, $ab_r, $ba_w) : ($file, $ba_r, $ab_w);
            open my $fh, '+<', $path or die "open $path: $!\n";
            my $token;
            if ($side == 0) {    # side 0 holds first, then lets side 1 start
                $token = $lock->($fh);
                print {$out} "ready\n";
            }
            else {
                my $ready = <$in> // die "peer gone\n";
            }
            for my $i (1 .. $n) {
                my $holding = ($i % 2) == ($side == 0 ? 1 : 0);
                if ($holding) {
                    my $word = <$in> // die "peer gone\n";    # "waiting"
                    Time::HiRes::sleep(0.002 + rand 0.003);
                    my $t = now();
                    $unlock->($fh, $token);
                    print {$out} "$t\n";
                    my $back = <$in> // die "peer gone\n";    # it holds now
                }
                else {
                    print {$out} "waiting\n";
                    $token = $lock->($fh);
                    my $t1 = now();
                    my $t0 = <$in> // die "peer gone\n";
                    print {$res_w} $t1 - $t0, "\n";
                    print {$out} "holding\n";
                }
            }
            # The waiter of the last round holds the lock now.
            my $last_waiter = $n % 2 ? 1 : 0;
            $unlock->($fh, $token) if $side == $last_waiter;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    close $res_w;
    my @lat;
    while (my $line = <$res_r>) { push @lat, $line + 0 }
    waitpid $_, 0 for @kids;
    unlink $file;
    return \@lat;
}

{
    my $n = scaled(200, 40);
    my @variants = (
        [ 'CORE::flock', sub { CORE::flock($_[0], LOCK_EX) or die "flock: $!\n"; 1 },
          sub { CORE::flock($_[0], LOCK_UN) } ],
        [ 'File::Locker::flock', sub { File::Locker::flock($_[0], LOCK_EX) or die "flock: $!\n"; 1 },
          sub { File::Locker::flock($_[0], LOCK_UN) } ],
        [ 'lock_file($fh)', sub { lock_file($_[0], LOCK_EX) or die "lock_file: $!\n" },
          sub { $_[1]->release } ],
        [ 'lock_range($fh, 0, 8)', sub { lock_range($_[0], LOCK_EX, 0, 8) or die "lock_range: $!\n" },
          sub { $_[1]->release } ],
        [ 'lock_range(..., coherent => 1)',
          sub { lock_range($_[0], LOCK_EX, 0, 8, coherent => 1) or die "lock_range: $!\n" },
          sub { $_[1]->release } ],
    );
    my @rows;
    for my $v (@variants) {
        my $lat = handoffs($v->[1], $v->[2], $n);
        push @rows, [ $v->[0], scalar @$lat, fmt_time(median(@$lat)), fmt_time(percentile(90, @$lat)),
                      fmt_time(percentile(99, @$lat)) ];
    }
    print format_table("Hand-off between mounts A and B: holder's unlock call -> waiter's lock call returns",
        [ 'variant', 'n', 'median', 'p90', 'p99' ], @rows);
}
