#!perl
# Signals during a flock wait: the perlipc alarm idiom, a handler that
# returns (with and without TIMEOUT), and a handler that dies mid-wait.
use strict;
use warnings;

use Test::More;
use POSIX ();
use lib 't/lib';
use LockerTest qw(spawn probe scratch_file now open_lock set_members patient_holder release_holder);
use File::Locker qw(:flock flock);

my $SAFETY      = 10;    # seconds: an upper bound only a broken wait could reach
my $ETIMEDOUT   = POSIX::ETIMEDOUT();
my $EINTR       = POSIX::EINTR();
my $TIMER_SIG   = POSIX::SIGRTMIN() + 5;

sub timer_sig_state {
    my $act = POSIX::SigAction->new;
    POSIX::sigaction($TIMER_SIG, undef, $act) or die "sigaction: $!";
    my $old = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), POSIX::SigSet->new, $old) or die "sigprocmask: $!";
    my %kernel;
    if (open my $st, '<', '/proc/self/status') {
        while (<$st>) { $kernel{$1} = $2 if /^(SigBlk|SigIgn|SigCgt|SigPnd|ShdPnd):\s*([0-9a-f]+)/ }
    }
    return {
        handler => "$act->{HANDLER}",
        flags   => $act->{FLAGS},
        safe    => $act->{SAFE},
        mask    => set_members($act->{MASK}),
        blocked => set_members($old),
        kernel  => \%kernel,
    };
}

# --- (a) the perlipc idiom, no TIMEOUT --------------------------------------

subtest 'alarm + die aborts an unbounded wait' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    my $h    = patient_holder($path, LOCK_EX, 20);
    my $t0   = now();
    my $r    = eval {
        local $SIG{ALRM} = sub { die "alarm\n" };
        alarm 1;
        flock($fh, LOCK_EX);
        alarm 0;
        1;
    };
    my $err  = $@;
    my $took = now() - $t0;
    alarm 0;
    ok(!$r, 'the eval did not complete');
    is($err, "alarm\n", '$@ is the handler\'s exception');
    cmp_ok($took, '<', $SAFETY, 'the wait ended with the alarm');
    is(release_holder($h), 'released', 'the holder kept its lock until told to let go');
    is(probe($path, LOCK_EX), 1, 'with the holder gone the file is free: the aborted wait took nothing');
    ok(flock($fh, LOCK_EX | LOCK_NB), 'and the handle can lock it now');
    ok(flock($fh, LOCK_UN), 'and unlock it');
    close $fh;
};

# --- (b) a returning handler, no TIMEOUT: false with EINTR, as in core -----

# Waits on a busy lock with alarm(1) and a handler that returns. Should the
# wait go on past the handler, a second alarm makes the handler die.
sub interrupted_wait {
    my ($lock) = @_;
    my ($r, $err, $ran) = (undef, undef, 0);
    my $ok = eval {
        local $SIG{ALRM} = sub { $ran++; die "wait went on past the handler\n" if $ran > 1; alarm 5 };
        alarm 1;
        $r   = $lock->();
        $err = $! + 0;
        alarm 0;
        1;
    };
    alarm 0;
    return ($ok ? '' : $@, $r, $err, $ran);
}

subtest 'a returning handler ends an unbounded wait with EINTR' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    my $h    = patient_holder($path, LOCK_EX, 20);

    my ($died, $r, $err, $ran) = interrupted_wait(sub { CORE::flock($fh, LOCK_EX) });
    is($died, '', 'CORE::flock: no exception');
    ok(!$r, 'CORE::flock: false');
    is($err, $EINTR, 'CORE::flock: $! is EINTR');
    is($ran, 1, 'CORE::flock: the handler ran once');

    ($died, $r, $err, $ran) = interrupted_wait(sub { flock($fh, LOCK_EX) });
    is($died, '', 'flock: no exception');
    is($r, 0, 'flock: returns 0');
    is($err, $EINTR, 'flock: $! is EINTR');
    is($ran, 1, 'flock: the handler ran once');

    is(release_holder($h), 'released', 'holder released on request');
    is(probe($path, LOCK_EX), 1, 'the interrupted wait took nothing');
    close $fh;
};

# --- (c) a returning handler with TIMEOUT: the wait goes on -----------------

subtest 'a returning handler lets a timed wait go on to the lock' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    my $h    = patient_holder($path, LOCK_EX, 20);
    my $ran  = 0;
    my $t0   = now();
    my ($r, $err);
    {
        # The handler is what releases the holder: the lock can only come
        # free after it ran.
        local $SIG{ALRM} = sub { $ran++; $h->say('release') if $ran == 1 };
        alarm 1;
        $r   = flock($fh, LOCK_EX, 15);
        $err = $! + 0;
        alarm 0;
    }
    my $took = now() - $t0;
    is($ran, 1, 'the handler ran');
    is($r, 1, 'flock returned 1: the wait went on and got the lock') or diag "errno $err";
    cmp_ok($took, '<', 15, 'before the timeout');
    is(release_holder($h, 1), 'released', 'the holder let go when the handler told it');
    is(probe($path, LOCK_SH), 0, 'the lock is held');
    ok(flock($fh, LOCK_UN), 'LOCK_UN');
    is(probe($path, LOCK_EX), 1, 'and released');
    close $fh;
};

subtest 'a returning handler, lock never released: ETIMEDOUT at the deadline' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    my $h    = patient_holder($path, LOCK_EX, 20);
    my $ran  = 0;
    my ($r, $err, $took);
    {
        local $SIG{ALRM} = sub { $ran++ };
        alarm 1;
        my $t0 = now();
        $r    = flock($fh, LOCK_EX, 3);
        $err  = $! + 0;
        $took = now() - $t0;
        alarm 0;
    }
    is($ran, 1, 'the handler ran');
    is($r, 0, 'returns 0');
    is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
    cmp_ok($took, '>=', 3, 'no sooner than the timeout');
    cmp_ok($took, '<', $SAFETY, 'and not much later');
    is(release_holder($h), 'released', 'holder released on request');
    close $fh;
};

# --- (d) a dying handler with TIMEOUT: the wait is aborted -------------------

sub aborted_timed_wait {
    my ($name, $prepare) = @_;
    subtest $name => sub {
        my $path = scratch_file();
        my $fh   = open_lock($path);
        my $h    = patient_holder($path, LOCK_EX, 20);
        my $restore = $prepare->();
        my $before  = timer_sig_state();
        my $t0      = now();
        my $r       = eval {
            local $SIG{ALRM} = sub { die "alarm\n" };
            alarm 1;
            flock($fh, LOCK_EX, 30);
            alarm 0;
            1;
        };
        my $err  = $@;
        my $took = now() - $t0;
        alarm 0;
        my $after = timer_sig_state();
        $restore->();
        ok(!$r, 'the eval did not complete');
        is($err, "alarm\n", '$@ is the handler\'s exception');
        cmp_ok($took, '<', $SAFETY, 'the wait ended with the alarm, long before its timeout');
        is_deeply($after, $before, 'SIGRTMIN+5 disposition and the signal mask are as before');
        is(release_holder($h), 'released', 'the holder kept its lock until told to let go');
        is(probe($path, LOCK_EX), 1, 'the file is free: the aborted wait took nothing');

        # A later timed flock still works, both ways (on a fresh handle, so
        # that a lock wrongly kept by the aborted wait cannot get in the way).
        close $fh;
        $fh = open_lock($path);
        $h  = patient_holder($path, LOCK_EX, 20);
        $t0 = now();
        my $r2   = flock($fh, LOCK_EX, 0.3);
        my $err2 = $! + 0;
        $took = now() - $t0;
        is($r2, 0, 'later timed flock on a busy lock: returns 0');
        is($err2, $ETIMEDOUT, 'later timed flock: $! is ETIMEDOUT');
        cmp_ok($took, '>=', 0.3, 'later timed flock: after its timeout');
        is(release_holder($h), 'released', 'holder released');
        is(flock($fh, LOCK_EX, 5), 1, 'later timed flock on a free lock: returns 1');
        ok(flock($fh, LOCK_UN), 'LOCK_UN');
        close $fh;
    };
}

aborted_timed_wait('a dying handler aborts a timed wait (default SIGRTMIN+5)',
    sub { sub { } });

aborted_timed_wait('a dying handler aborts a timed wait (SIGRTMIN+5 handled and blocked)', sub {
    my $old_action = POSIX::SigAction->new;
    POSIX::sigaction($TIMER_SIG, POSIX::SigAction->new(sub { }), $old_action) or die "sigaction: $!";
    my $old_mask = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), POSIX::SigSet->new($TIMER_SIG), $old_mask)
      or die "sigprocmask: $!";
    return sub {
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old_mask) or die "sigprocmask: $!";
        POSIX::sigaction($TIMER_SIG, POSIX::SigAction->new('DEFAULT')) or die "sigaction: $!";
    };
});

subtest 'after an aborted timed wait SIGRTMIN+5 has its default action again' => sub {
    my $path = scratch_file();
    my $h    = patient_holder($path, LOCK_EX, 20);
    my $c    = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        my $r = eval {
            local $SIG{ALRM} = sub { die "alarm\n" };
            alarm 1;
            flock($fh, LOCK_EX, 30);
            alarm 0;
            1;
        };
        alarm 0;
        chomp(my $err = $@);
        $parent->say("aborted by $err");
        kill $TIMER_SIG, $$;
        $parent->say('survived');
    });
    is($c->hear, 'aborted by alarm', 'child: the wait was aborted by its handler');
    is($c->hear, undef, 'child: SIGRTMIN+5 sent afterwards ended it');
    my $status = $c->wait;
    is($status & 127, $TIMER_SIG, 'killed by SIGRTMIN+5, the default action');
    is(release_holder($h), 'released', 'holder released');
};

is(waitpid(-1, POSIX::WNOHANG()), -1, 'every child was reaped');

done_testing;
