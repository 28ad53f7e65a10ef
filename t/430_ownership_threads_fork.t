#!perl
# Ownership under threads and fork, checked from another process:
#   - two ithreads waiting on one handle (one open file description), one
#     for LOCK_EX and one for LOCK_SH on the same bytes: whichever grant
#     lands last, while the exclusive guard lives no other process gets
#     those bytes, even shared;
#   - a forked child that locks and unlocks through a handle it inherited
#     (the parent's open file description) cannot make the parent's guards
#     lie: is_locked says what the kernel holds.

use strict;
use warnings;

use Config;
BEGIN {
    if ($Config{useithreads}) {    # before Test::More, so that it shares its state
        require threads;
        threads->import;
        require threads::shared;
        threads::shared->import;
    }
}
use Test::More;
use lib 't/lib';
use LockerTest qw(scratch_file spawn open_rw now probe blocked_requests);
use File::Locker qw(:flock lock_file lock_range);

plan skip_all => 'open-file-description locks and /proc needed' unless $^O eq 'linux';

# probe_range(PATH, MODE, START, LEN): a fresh process tries a range lock of its
# own (timeout 0) and says 'granted' or 'refused'.
sub probe_range {
    my ($path, $mode, $start, $len) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $g = lock_range($path, $mode, $start, $len, timeout => 0);
        $parent->say($g ? 'granted' : 'refused');
    });
    my $word = $peer->hear // 'no answer';
    $peer->wait;
    return $word;
}

SKIP: {
    skip 'this perl has no ithreads', 1 unless $Config{useithreads};
    subtest 'two ithreads, LOCK_EX and LOCK_SH on one handle, both waiting' => sub {
        my $rounds = $ENV{LOCKER_THREAD_ROUNDS} || 10;
        for my $round (1 .. $rounds) {
            my $path = scratch_file();
            my $fh   = open_rw($path);
            # Another process holds the bytes exclusively until told.
            my $holder = spawn(sub {
                my ($parent) = @_;
                my $g = lock_range($path, LOCK_EX, 0, 100) or die "holder: $!";
                $parent->say('locked');
                $parent->hear;
            });
            $holder->expect('locked');
            my $started = 0;
            my $granted = 0;
            my $go      = 0;
            share($started);
            share($granted);
            share($go);
            my @threads = map {
                my $mode = $_;
                threads->create(sub {
                    { lock($started); $started++ }
                    my $g = lock_range($fh, $mode, 0, 100, timeout => 30) or return 'failed';
                    { lock($granted); $granted++; cond_broadcast($granted) }
                    { lock($go); cond_wait($go) until $go }
                    return $g->mode == $mode ? 'ok' : 'wrong mode';
                });
            } LOCK_EX, LOCK_SH;
            # Both threads have asked, and a request waits at the kernel (the
            # other waits its turn in the process: one request at a time per
            # open file description goes to the kernel), before the holder
            # lets go.
            my $give_up = now() + 30;
            1 until ($started >= 2 && blocked_requests((stat $path)[1]) >= 1) || now() > $give_up;
            $holder->say('release');
            $holder->wait;
            { lock($granted); cond_timedwait($granted, time + 30) until $granted >= 2 }
            is(probe_range($path, LOCK_SH, 0, 100), 'refused',
               "round $round: while the LOCK_EX guard lives, another process cannot share the bytes");
            { lock($go); $go = 1; cond_broadcast($go) }
            is(join(' ', map { $_->join } @threads), 'ok ok', "round $round: both threads got their guards");
            is(probe_range($path, LOCK_EX, 0, 100), 'granted', "round $round: and all is free after");
        }
    };
}

subtest 'a child locking through an inherited handle cannot make the parent lie' => sub {
    my $path = scratch_file();
    my $fh   = open_rw($path);
    my $range = lock_range($fh, LOCK_EX, 0, 100) or die "lock_range: $!";
    my $whole = lock_file($fh, LOCK_EX) or die "lock_file: $!";
    my $child = spawn(sub {
        my ($parent) = @_;
        # The same open file description as the parent's guards: the kernel
        # keeps one lock per description, so these are the parent's locks.
        # (Classic POSIX locks belong to the process: the child is refused.)
        my $g = lock_range($fh, LOCK_SH, 10, 10, timeout => 0);
        my $w = lock_file($fh, LOCK_SH, timeout => 0);
        undef $g;
        undef $w;
        $parent->say('done');
    });
    $child->expect('done');
    $child->wait;
    my $bytes = probe_range($path, LOCK_EX, 10, 10);
    is($range->is_locked ? 'held' : 'not held', $bytes eq 'refused' ? 'held' : 'not held',
       "the parent's range guard says what the kernel holds (outside: $bytes)");
    my $file = probe($path, LOCK_EX) ? 'granted' : 'refused';
    is($whole->is_locked ? 'held' : 'not held', $file eq 'refused' ? 'held' : 'not held',
       "the parent's whole-file guard says what the kernel holds (outside: $file)");
    $range->release;
    $whole->release;
    is(probe_range($path, LOCK_EX, 0, 0), 'granted', 'all free after release');
};

done_testing;
