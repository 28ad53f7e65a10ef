#!perl
# Stress: several processes, each running several async waits at once, take
# exclusive locks through lock_file_async and lock_range_async and increment
# a counter under each. Some waits are cancelled or dropped at random while
# they may still be pending. Mutual exclusion must hold: an occupancy marker
# set by each holder is never found set by another, and the counter ends at
# exactly the number of granted waits. No thread or descriptor is left in
# any worker.
#
# Sizes: LOCKER_STRESS_PROCS workers (default 4), LOCKER_STRESS_ITERS rounds
# each (default 100). LOCKER_TEST_SEED repeats a run.
use strict;
use warnings;

use Test::More;
use IO::Select;
use lib 't/lib';
use LockerTest qw(spawn scratch_file open_rw fd_count task_count);
use File::Locker qw(:flock lock_file_async lock_range_async);

my $PROCS = $ENV{LOCKER_STRESS_PROCS} || 4;
my $ITERS = $ENV{LOCKER_STRESS_ITERS} || 100;
my $SEED  = $ENV{LOCKER_TEST_SEED} // (time ^ $$);
diag "seed $SEED; rerun with LOCKER_TEST_SEED=$SEED";

my $WIDTH = 20;

sub read_number {
    my ($fh, $at) = @_;
    sysseek($fh, $at, 0) or die "seek: $!";
    my $got = sysread($fh, my $buf, $WIDTH) // die "read: $!";
    return 0 if $got == 0;
    $buf =~ /^\s*(\d+)$/ or die "garbage: '$buf'";
    return $1;
}

sub write_number {
    my ($fh, $at, $n) = @_;
    sysseek($fh, $at, 0) or die "seek: $!";
    syswrite($fh, sprintf("%${WIDTH}d", $n)) == $WIDTH or die "write: $!";
}

for my $kind (qw(file range)) {
    my $lock = scratch_file();
    my $data = scratch_file();    # counter and occupancy marker
    {
        my $fh = open_rw($data);
        write_number($fh, 0, 0);
        write_number($fh, $WIDTH, 0);
    }
    my @workers = map {
        my $n = $_;
        spawn(sub {
            my ($parent) = @_;
            srand($SEED + $n);
            my $fh = open_rw($data);
            my ($granted, $violations, $waited, $tasks, $fds) = (0, 0, 0, task_count(), fd_count());
            $parent->say('ready');
            $parent->expect('go');
            for my $round (1 .. $ITERS) {
                # Two waits at once on the same lock; one may be given up.
                my @w = map {
                    $kind eq 'file' ? lock_file_async($lock, LOCK_EX, timeout => 30)
                                    : lock_range_async($lock, LOCK_EX, 100, 10, timeout => 30)
                } 1 .. 2;
                $waited += grep { $_->_threaded } @w;
                my $r = rand;
                if    ($r < 0.2) { $w[1]->cancel }
                elsif ($r < 0.4) { pop @w }
                my $select = IO::Select->new(map { $_->fh } @w);
                my %index  = map { fileno($w[$_]->fh) => $_ } 0 .. $#w;
                while ($select->count) {
                    my @ready = $select->can_read(60) or die "no waiter ended in 60 s\n";
                    for my $h (@ready) {
                        $select->remove($h);
                        my $g = $w[ $index{ fileno $h } ]->guard or next;
                        $granted++;
                        $violations++ if read_number($fh, $WIDTH) != 0;
                        write_number($fh, $WIDTH, $$);
                        write_number($fh, 0, read_number($fh, 0) + 1);
                        $violations++ if read_number($fh, $WIDTH) != $$;
                        write_number($fh, $WIDTH, 0);
                    }
                }
            }
            my $left = (task_count() - $tasks) . ' ' . (fd_count() - $fds);
            $parent->say("done $granted $violations $waited $left");
        });
    } 1 .. $PROCS;
    $_->expect('ready') for @workers;
    $_->say('go') for @workers;
    my ($total, $violations, $waited, $leftovers, @said) = (0, 0, 0, 0);
    for my $w (@workers) {
        my $line = $w->hear // 'end of file';
        push @said, $line;
        $w->wait;
        if ($line =~ /^done (\d+) (\d+) (\d+) (-?\d+) (-?\d+)$/) {
            $total      += $1;
            $violations += $2;
            $waited     += $3;
            $leftovers  += 1 if $4 || $5;
        }
        else {
            fail("$kind: worker said '$line'");
        }
    }
    my $fh = open_rw($data);
    cmp_ok($total, '>=', $PROCS * $ITERS, "$kind: at least one grant per round ($total)");
    cmp_ok($waited, '>', 0, "$kind: waits went to the engine's threads ($waited)");
    is(read_number($fh, 0), $total, "$kind: the counter equals the grants: no increment lost");
    is($violations, 0, "$kind: no holder ever saw another inside");
    is($leftovers, 0, "$kind: no worker was left with a thread or descriptor")
      or diag("workers said (done GRANTS VIOLATIONS WAITED THREADS FDS): @said");
}

done_testing;
