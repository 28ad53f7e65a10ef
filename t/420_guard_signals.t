#!perl
# Signals while a guard waits -- in lock_file and in $g->upgrade, with and
# without a timeout: a handler that dies aborts the wait with its exception
# and leaves nothing locked or open; a handler that returns lets the wait go
# on, to the lock or to the deadline.
use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes ();
use lib 't/lib';
use LockerTest qw(spawn probe scratch_file fd_count now patient_holder release_holder);
use File::Locker qw(:flock lock_file);

my $SAFETY    = 5;     # seconds: less than any timeout or holder patience below
my $PATIENCE  = 20;    # seconds a holder waits for its word before letting go
my $ETIMEDOUT = POSIX::ETIMEDOUT();

# Runs WAIT with alarm(1) and a $SIG{ALRM} handler that dies.
sub wait_with_dying_handler {
    my ($wait) = @_;
    my %r;
    my $t0 = now();
    my $ok = eval {
        local $SIG{ALRM} = sub { die "boom\n" };
        alarm 1;
        $r{result} = $wait->();
        $r{errno}  = $! + 0;
        alarm 0;
        1;
    };
    $r{died} = $ok ? '' : $@;
    $r{took} = now() - $t0;
    alarm 0;
    return \%r;
}

# Runs WAIT with a $SIG{ALRM} handler that counts its calls, calls AFTER
# (if any) the first time, and returns; the alarm fires after SECONDS.
sub wait_with_returning_handler {
    my ($seconds, $after, $wait) = @_;
    my %r = (ran => 0);
    my $t0 = now();
    {
        local $SIG{ALRM} = sub { $r{ran}++; $after->() if $after && $r{ran} == 1 };
        Time::HiRes::alarm($seconds);
        $r{result} = $wait->();
        $r{errno}  = $! + 0;
        Time::HiRes::alarm(0);
    }
    $r{took} = now() - $t0;
    return \%r;
}

my $base_fds = fd_count();

my @timeouts = ([ 'no timeout' ], [ 'timeout => 10', timeout => 10 ]);

# ---- lock_file --------------------------------------------------------------

for my $target (qw(PATH handle)) {
    for my $t (@timeouts) {
        my ($name, @timeout) = @$t;

        subtest "lock_file on a $target, $name: a handler that dies" => sub {
            my $path = scratch_file();
            my $fh;
            open $fh, '<', $path or die "open $path: $!" if $target eq 'handle';
            my $h   = patient_holder($path, LOCK_EX, $PATIENCE);
            my $fds = fd_count();
            my $g;
            my $r = wait_with_dying_handler(sub { $g = lock_file($fh // $path, LOCK_EX, @timeout) });
            is($r->{died}, "boom\n", "the handler's exception came out of lock_file");
            ok(!defined $g, 'no guard was returned');
            cmp_ok($r->{took}, '<', $SAFETY, 'at once: not at the timeout, nor once the holder let go');
            is(fd_count(), $fds, 'no descriptor was left open');
            is(release_holder($h), 'released', 'the holder kept its lock until told to let go');
            is(probe($path, LOCK_EX), 1, 'then the file is free: the aborted wait left nothing locked');
            if ($fh) {
                ok(CORE::flock($fh, LOCK_EX | LOCK_NB), 'and the handle itself can take the lock');
                CORE::flock($fh, LOCK_UN);
                close $fh;
            }
        };

        subtest "lock_file on a $target, $name: a handler that returns" => sub {
            my $path = scratch_file();
            my $fh;
            open $fh, '<', $path or die "open $path: $!" if $target eq 'handle';
            my $h = patient_holder($path, LOCK_EX, $PATIENCE);
            # The handler is what tells the holder to let go, so the lock can
            # only come free after the handler ran.
            my $r = wait_with_returning_handler(1, sub { $h->say('release') },
                sub { lock_file($fh // $path, LOCK_EX, @timeout) });
            my $g = delete $r->{result};    # the only reference
            is($r->{ran}, 1, 'the handler ran once');
            ok($g && $g->is_locked, 'the wait went on and lock_file returned a guard')
              or diag "errno $r->{errno}";
            cmp_ok($r->{took}, '<', $SAFETY, 'as soon as the holder let go');
            is(release_holder($h, 1), 'released', 'the holder let go when the handler told it');
            is(probe($path, LOCK_SH), 0, 'the guard holds the lock');
            undef $g;
            is(probe($path, LOCK_EX), 1, 'and releases it when it goes');
            close $fh if $fh;
        };
    }
}

subtest 'lock_file, timeout => 1.5, a handler that returns, the lock never comes free' => sub {
    my $path = scratch_file();
    my $h    = patient_holder($path, LOCK_EX, $PATIENCE);
    my $fds  = fd_count();
    my $r    = wait_with_returning_handler(0.5, undef, sub { lock_file($path, LOCK_EX, timeout => 1.5) });
    is($r->{ran}, 1, 'the handler ran once');
    ok(!defined $r->{result}, 'lock_file returned undef');
    is($r->{errno}, $ETIMEDOUT, '$! is ETIMEDOUT');
    cmp_ok($r->{took}, '>=', 1.5, 'no sooner than the timeout');
    cmp_ok($r->{took}, '<', 1.5 + $SAFETY, 'and not much later');
    is(fd_count(), $fds, 'no descriptor was left open');
    is(release_holder($h), 'released', 'the holder kept its lock throughout');
    is(probe($path, LOCK_EX), 1, 'then the file is free');
};

# ---- upgrade ----------------------------------------------------------------

for my $t (@timeouts) {
    my ($name, @timeout) = @$t;

    subtest "upgrade, $name, another LOCK_SH holder: a handler that dies" => sub {
        my $path = scratch_file();
        my $g    = lock_file($path, LOCK_SH) or die "lock_file: $!";
        my $h    = patient_holder($path, LOCK_SH, $PATIENCE);
        my $fds  = fd_count();
        my $r    = wait_with_dying_handler(sub { $g->upgrade(@timeout) });
        is($r->{died}, "boom\n", "the handler's exception came out of upgrade");
        cmp_ok($r->{took}, '<', $SAFETY, 'at once: not at the timeout, nor once the holder let go');
        ok(!($g->is_locked && $g->mode == LOCK_EX), 'the guard did not end up exclusive');
        is(fd_count(), $fds, 'no descriptor was opened or lost');
        is(release_holder($h), 'released', 'the other holder kept its lock until told to let go');
        my $locked = $g->is_locked ? 1 : 0;
        is(probe($path, LOCK_EX), 1, 'then the file is free: the aborted wait left nothing locked');
        is($locked, 0, 'and is_locked says so');
        ok($g->release, 'release is still fine');
        is(probe($path, LOCK_EX), 1, 'and the file is free after it');
    };

    subtest "upgrade, $name, another LOCK_SH holder: a handler that returns" => sub {
        my $path = scratch_file();
        my $g    = lock_file($path, LOCK_SH) or die "lock_file: $!";
        my $h    = patient_holder($path, LOCK_SH, $PATIENCE);
        my $r    = wait_with_returning_handler(1, sub { $h->say('release') }, sub { $g->upgrade(@timeout) });
        is($r->{ran}, 1, 'the handler ran once');
        ok($r->{result}, 'the wait went on and upgrade returned true') or diag "errno $r->{errno}";
        cmp_ok($r->{took}, '<', $SAFETY, 'as soon as the holder let go');
        ok($g->is_locked, 'the guard is locked');
        is($g->mode, LOCK_EX, 'in LOCK_EX');
        is(release_holder($h, 1), 'released', 'the other holder let go when the handler told it');
        is(probe($path, LOCK_SH), 0, 'the lock is exclusive');
        $g->release;
        is(probe($path, LOCK_EX), 1, 'and free after release');
    };
}

subtest 'upgrade, timeout => 1.5, a handler that returns, the other holder stays' => sub {
    my $path = scratch_file();
    my $g    = lock_file($path, LOCK_SH) or die "lock_file: $!";
    my $h    = patient_holder($path, LOCK_SH, $PATIENCE);
    my $r    = wait_with_returning_handler(0.5, undef, sub { $g->upgrade(timeout => 1.5) });
    is($r->{ran}, 1, 'the handler ran once');
    ok(!$r->{result}, 'upgrade returned false');
    is($r->{errno}, $ETIMEDOUT, '$! is ETIMEDOUT');
    cmp_ok($r->{took}, '>=', 1.5, 'no sooner than the timeout');
    cmp_ok($r->{took}, '<', 1.5 + $SAFETY, 'and not much later');
    ok(!($g->is_locked && $g->mode == LOCK_EX), 'the guard is not exclusive');
    my $locked = $g->is_locked ? 1 : 0;
    note "after the failed upgrade the guard says is_locked $locked, mode " . $g->mode;
    is(release_holder($h), 'released', 'the other holder kept its lock throughout');
    is(probe($path, LOCK_EX), 1 - $locked, 'is_locked tells the truth about what the guard holds');
    $g->release;
    is(probe($path, LOCK_EX), 1, 'free after release');
};

is(fd_count(), $base_fds, 'every descriptor the tests opened is closed again');
is(waitpid(-1, POSIX::WNOHANG()), -1, 'every child was reaped');

done_testing;
