#!perl
# A timed wait never ends before its deadline.
#
# Many random short timeouts, each on a lock another process holds: flock
# with TIMEOUT, lock_file and lock_range with timeout, and a guard's
# upgrade. Each call must report ETIMEDOUT, and no earlier than TIMEOUT
# seconds after it was made (measured on CLOCK_MONOTONIC, the engine's own
# clock). How late it may be is not asserted.
#
# LOCKER_TEST_SEED repeats a run; LOCKER_TIMING_ROUNDS sets the number of
# calls (default 200).
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use POSIX qw(ETIMEDOUT);
use lib 't/lib';
use LockerTest qw(spawn holder scratch_file now open_lock release_and_wait);
use File::Locker qw(flock lock_file lock_range);

my $SEED = $ENV{LOCKER_TEST_SEED} // (time ^ $$);
diag "seed $SEED; rerun with LOCKER_TEST_SEED=$SEED";
srand $SEED;
my $ROUNDS = $ENV{LOCKER_TIMING_ROUNDS} || 200;

# CLOCK_MONOTONIC has nanosecond resolution, and a double holding seconds
# since boot keeps well under a nanosecond of it: a difference may be off
# by that much in the last digit, no more.
my $RESOLUTION = 2e-9;

my $file_path  = scratch_file();    # held LOCK_EX by a flock holder
my $range_path = scratch_file();    # bytes 0..99 held by an OFD range holder
my $shared     = scratch_file();    # held LOCK_SH by a holder; we upgrade

my $file_holder  = holder($file_path, LOCK_EX);
my $share_holder = holder($shared, LOCK_SH);
my $range_holder = spawn(sub {
    my ($parent) = @_;
    my $guard = lock_range($range_path, LOCK_EX, 0, 100) or die "lock_range: $!";
    $parent->say('locked');
    $parent->expect('release');
    undef $guard;
    $parent->say('released');
});
$range_holder->expect('locked');

my $fh = open_lock($file_path);
my $upgrading = lock_file($shared, LOCK_SH) or die "lock_file $shared: $!";

# name => code taking TIMEOUT; each returns false with $! set on timeout.
my %calls = (
    'flock with TIMEOUT'      => sub { flock($fh, LOCK_EX, $_[0]) },
    'lock_file with timeout'  => sub { lock_file($file_path, LOCK_SH, timeout => $_[0]) },
    'lock_range with timeout' => sub { lock_range($range_path, LOCK_SH, 50, 10, timeout => $_[0]) },
    'upgrade with timeout'    => sub {
        my $ok = $upgrading->upgrade(timeout => $_[0]);
        my $err = $! + 0;
        $upgrading->is_locked or $upgrading = lock_file($shared, LOCK_SH) or die "lock_file: $!";
        $! = $err;
        return $ok;
    },
);
my @names = sort keys %calls;

# Mostly a few milliseconds; some well under one, some exactly on one.
sub random_timeout {
    my $kind = rand;
    return rand(0.001)                  if $kind < 0.25;
    return (1 + int rand 20) / 1000     if $kind < 0.4;
    return 0.001 + rand(0.03);
}

my (%calls_made, @early, @wrong);
for my $round (1 .. $ROUNDS) {
    my $name    = $names[rand @names];
    my $timeout = random_timeout();
    local $!;
    my $t0  = now();
    my $got = $calls{$name}->($timeout);
    my $t1  = now();
    my $err = $! + 0;
    $calls_made{$name}++;
    my $what = sprintf '%s, timeout %.9f s (round %d)', $name, $timeout, $round;
    if ($got || $err != ETIMEDOUT) {
        push @wrong, "$what: " . ($got ? 'locked' : "\$! = $!");
    }
    elsif ($t1 - $t0 < $timeout - $RESOLUTION) {
        push @early, sprintf '%s: returned after %.9f s', $what, $t1 - $t0;
    }
}

is scalar @wrong, 0, "all $ROUNDS timed waits ended with ETIMEDOUT"
  or diag join "\n", @wrong[0 .. ($#wrong < 9 ? $#wrong : 9)], "seed $SEED";
is scalar @early, 0, 'none returned before its deadline'
  or diag join "\n", @early[0 .. ($#early < 9 ? $#early : 9)], "seed $SEED";
ok $calls_made{$_}, "$_ was exercised" for @names;

undef $upgrading;
release_and_wait($_) for $file_holder, $share_holder, $range_holder;

done_testing;
