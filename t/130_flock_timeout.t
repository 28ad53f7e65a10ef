#!perl
# flock with TIMEOUT: expiry, immediate tries, fractional values, waking
# early when the holder lets go, and the caller's signal state left intact.
use strict;
use warnings;

use Test::More;
use Config;
use POSIX ();
use lib 't/lib';
use LockerTest qw(spawn holder probe scratch_file now release_and_wait open_lock set_members);
use File::Locker qw(:flock flock);

my $SAFETY = 10;    # seconds: an upper bound only a broken wait could reach
my $ETIMEDOUT   = POSIX::ETIMEDOUT();
my $EWOULDBLOCK = POSIX::EWOULDBLOCK();
my $TIMER_SIG   = POSIX::SIGRTMIN() + 5;

# Runs flock under a safety alarm so that a wait that never ends fails the
# test instead of hanging it. Returns (result, errno, seconds taken).
sub timed_flock {
    my ($fh, $op, $timeout) = @_;
    my ($r, $err, $t0, $t1);
    local $SIG{ALRM} = sub { die "flock still waiting after 30 s\n" };
    alarm 30;
    $t0  = now();
    $r   = flock($fh, $op, $timeout);
    $err = $! + 0;
    $t1  = now();
    alarm 0;
    return ($r, $err, $t1 - $t0);
}

# Runs CODE while a CORE::flock holder of MODE keeps PATH busy; the holder is
# released whatever CODE does.
sub with_holder {
    my ($path, $mode, $code) = @_;
    my $h   = holder($path, $mode);
    my $ok  = eval { $code->($h); 1 };
    my $err = $@;
    release_and_wait($h);
    die $err unless $ok;
}

# --- signal state -----------------------------------------------------------

# The %SIG name perl uses for a signal number (SIGRTMIN+5 has no fixed name).
sub sig_name_of {
    my ($num) = @_;
    my @names = split ' ', $Config{sig_name};
    my @nums  = split ' ', $Config{sig_num};
    for my $i (0 .. $#names) { return $names[$i] if $nums[$i] == $num }
    return undef;
}

sub disposition {
    my ($sig) = @_;
    my $act = POSIX::SigAction->new;
    POSIX::sigaction($sig, undef, $act) or die "sigaction($sig): $!";
    return {
        handler => "$act->{HANDLER}",
        flags   => $act->{FLAGS},
        safe    => $act->{SAFE},
        mask    => set_members($act->{MASK}),
    };
}

sub blocked_signals {
    my $old = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), POSIX::SigSet->new, $old) or die "sigprocmask: $!";
    return set_members($old);
}

# What the kernel says: blocked, ignored, caught and pending signal masks.
sub kernel_signals {
    open my $st, '<', '/proc/self/status' or return {};
    my %s;
    while (<$st>) { $s{$1} = $2 if /^(SigBlk|SigIgn|SigCgt|SigPnd|ShdPnd):\s*([0-9a-f]+)/ }
    return \%s;
}

sub kernel_bit {
    my ($mask, $sig) = @_;
    no warnings 'portable';
    return defined $mask ? (hex($mask) >> ($sig - 1)) & 1 : undef;
}

sub signal_state {
    return {
        timer_sig => disposition($TIMER_SIG),
        alrm      => disposition(POSIX::SIGALRM()),
        blocked   => blocked_signals(),
        kernel    => kernel_signals(),
    };
}

my $TIMER_SIG_NAME = sig_name_of($TIMER_SIG);

# --- expiry ----------------------------------------------------------------

subtest 'LOCK_EX against an exclusive holder times out' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    with_holder($path, LOCK_EX, sub {
        my ($r, $err, $took) = timed_flock($fh, LOCK_EX, 0.3);
        is($r, 0, 'returns 0');
        is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
        cmp_ok($took, '>=', 0.3, 'waited no less than the timeout');
        cmp_ok($took, '<', $SAFETY, 'and ended');
    });
    is(probe($path, LOCK_EX), 1, 'the timed-out wait left nothing locked');
    close $fh;
};

subtest 'shared waits time out too' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    with_holder($path, LOCK_EX, sub {
        my ($r, $err, $took) = timed_flock($fh, LOCK_SH, 0.3);
        is($r, 0, 'LOCK_SH against LOCK_EX: returns 0');
        is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
        cmp_ok($took, '>=', 0.3, 'waited no less than the timeout');
        cmp_ok($took, '<', $SAFETY, 'and ended');
    });
    with_holder($path, LOCK_SH, sub {
        my ($r, $err, $took) = timed_flock($fh, LOCK_EX, 0.3);
        is($r, 0, 'LOCK_EX against LOCK_SH: returns 0');
        is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
        cmp_ok($took, '>=', 0.3, 'waited no less than the timeout');
        cmp_ok($took, '<', $SAFETY, 'and ended');

        ($r, $err, $took) = timed_flock($fh, LOCK_SH, 0.3);
        is($r, 1, 'LOCK_SH beside a shared holder is granted');
        ok(flock($fh, LOCK_UN), 'and released');
    });
    close $fh;
};

subtest 'TIMEOUT 0 is one non-blocking try' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    with_holder($path, LOCK_EX, sub {
        for my $zero (0, 0.0, '0', '0.0') {
            my ($r, $err, $took) = timed_flock($fh, LOCK_EX, $zero);
            is($r, 0, "TIMEOUT '$zero': returns 0");
            is($err, $EWOULDBLOCK, "TIMEOUT '$zero': \$! is EWOULDBLOCK");
            cmp_ok($took, '<', $SAFETY, "TIMEOUT '$zero': returns at once");
        }
        my ($r, $err) = timed_flock($fh, LOCK_SH, 0);
        is($r, 0, 'LOCK_SH, TIMEOUT 0: returns 0');
        is($err, $EWOULDBLOCK, 'LOCK_SH, TIMEOUT 0: $! is EWOULDBLOCK');

        ($r, $err) = timed_flock($fh, LOCK_EX | LOCK_NB, 5);
        is($r, 0, 'LOCK_NB with a positive TIMEOUT: returns 0');
        is($err, $EWOULDBLOCK, 'LOCK_NB wins over TIMEOUT: $! is EWOULDBLOCK');
    });
    my ($r) = timed_flock($fh, LOCK_EX, 0);
    is($r, 1, 'TIMEOUT 0 on a free file takes the lock');
    is(probe($path, LOCK_SH), 0, 'which is held');
    ok(flock($fh, LOCK_UN), 'and released');
    close $fh;
};

subtest 'fractional timeouts' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    with_holder($path, LOCK_EX, sub {
        for my $t (0.05, 0.25, '0.15', 1.5) {
            my ($r, $err, $took) = timed_flock($fh, LOCK_EX, $t);
            is($r, 0, "TIMEOUT $t: returns 0");
            is($err, $ETIMEDOUT, "TIMEOUT $t: \$! is ETIMEDOUT");
            cmp_ok($took, '>=', $t, "TIMEOUT $t: waited no less than $t s");
            cmp_ok($took, '<', $SAFETY, "TIMEOUT $t: and ended");
        }

        # Many very short waits: the timer often fires around the moment the
        # blocking call starts; every wait must still end at its deadline.
        my ($bad, $early) = (0, 0);
        for (1 .. 100) {
            my ($r, $err, $took) = timed_flock($fh, LOCK_EX, 0.002);
            $bad++   unless $r == 0 && $err == $ETIMEDOUT;
            $early++ if $took < 0.002;
        }
        is($bad, 0, '100 waits of 2 ms all end with ETIMEDOUT');
        is($early, 0, 'none of them before its deadline');
    });
    close $fh;
};

subtest 'a free lock is taken at once, TIMEOUT or not' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    my ($r, $err, $took) = timed_flock($fh, LOCK_EX, 5);
    is($r, 1, 'LOCK_EX with TIMEOUT on a free file returns 1');
    cmp_ok($took, '<', 5, 'without waiting for the timeout');
    is(probe($path, LOCK_SH), 0, 'the lock is held');
    ok(flock($fh, LOCK_UN), 'LOCK_UN');
    is(probe($path, LOCK_EX), 1, 'and released');
    close $fh;
};

# --- waking early ----------------------------------------------------------

# A child waits with a long timeout while a holder keeps PATH busy; it says
# "waiting" just before it calls flock and the holder is released only then.
# The child compares its signal state before and after the wait.
sub early_success {
    my ($holder_mode, $waiter_mode, $name) = @_;
    subtest $name => sub {
        my $path = scratch_file();
        my $h    = holder($path, $holder_mode);
        my $w    = spawn(sub {
            my ($parent) = @_;
            open my $fh, '<', $path or die "open $path: $!";
            my $before = signal_state();
            $parent->say('waiting');
            my $t0  = now();
            my $r   = flock($fh, $waiter_mode, 30);
            my $err = $! + 0;
            my $took = now() - $t0;
            my $same = Test::More::eq_hash(signal_state(), $before) ? 1 : 0;
            $parent->say(sprintf 'got %d %d %.6f %d', $r, $err, $took, $same);
            $parent->expect('done');
        });
        $w->expect('waiting');
        is(release_and_wait($h), 0, 'holder released');
        my $report = $w->hear // 'nothing';
        my ($r, $err, $took, $same) = $report =~ /^got (\d+) (\d+) (\S+) (\d)$/;
        is($r, 1, 'the waiter got the lock') or diag "waiter said: $report";
        cmp_ok($took // 99, '<', 15, 'long before its 30 s timeout');
        is($same, 1, "the waiter's signal state is as before its wait");
        is(probe($path, $waiter_mode == LOCK_SH ? LOCK_EX : LOCK_SH), 0,
            'the waiter holds the lock');
        $w->say('done');
        is($w->wait, 0, 'waiter exited cleanly');
        is(probe($path, LOCK_EX), 1, 'and its lock went with it');
    };
}

early_success(LOCK_EX, LOCK_EX, 'LOCK_EX waiter wakes when an exclusive holder lets go');
early_success(LOCK_EX, LOCK_SH, 'LOCK_SH waiter wakes when an exclusive holder lets go');
early_success(LOCK_SH, LOCK_EX, 'LOCK_EX waiter wakes when a shared holder lets go');

# --- the caller's signal state ---------------------------------------------

subtest 'alarm and $SIG{ALRM} survive a timed-out wait' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    with_holder($path, LOCK_EX, sub {
        my $fired   = 0;
        my $handler = sub { $fired++ };
        local $SIG{ALRM} = $handler;
        my $before = disposition(POSIX::SIGALRM());
        alarm 100;
        my $t0  = now();
        my $r   = flock($fh, LOCK_EX, 0.3);
        my $err = $! + 0;
        my $took = now() - $t0;
        my $left = alarm 0;
        is($r, 0, 'timed out');
        is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
        cmp_ok($took, '>=', 0.3, 'after the timeout');
        cmp_ok($left, '>=', 98, 'the pending alarm kept its time');
        cmp_ok($left, '<=', 100, '(and was not pushed back)');
        is($fired, 0, 'SIGALRM was not raised');
        is($SIG{ALRM}, $handler, '$SIG{ALRM} is the same code ref');
        is_deeply(disposition(POSIX::SIGALRM()), $before, 'SIGALRM disposition unchanged');
    });
    close $fh;
};

SKIP: {
    skip 'no %SIG name for SIGRTMIN+5', 1 unless defined $TIMER_SIG_NAME;

    my %install = (
        'default disposition'                => sub { $SIG{$TIMER_SIG_NAME} = 'DEFAULT' },
        'handler from POSIX::sigaction'      => sub {
            POSIX::sigaction($TIMER_SIG, POSIX::SigAction->new(sub { })) or die "sigaction: $!";
        },
        'handler from %SIG'                  => sub { $SIG{$TIMER_SIG_NAME} = sub { } },
        'ignored'                            => sub { $SIG{$TIMER_SIG_NAME} = 'IGNORE' },
    );
    for my $case (sort keys %install) {
        subtest "SIGRTMIN+5 $case is restored after a timed wait" => sub {
            my $path = scratch_file();
            my $fh   = open_lock($path);
            $install{$case}->();
            with_holder($path, LOCK_EX, sub {
                my $before = signal_state();
                my ($r, $err, $took) = timed_flock($fh, LOCK_EX, 0.2);
                my $after = signal_state();
                is($r, 0, 'timed out');
                is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
                is_deeply($after->{timer_sig}, $before->{timer_sig},
                    'POSIX::sigaction reports the same SIGRTMIN+5 action');
                is_deeply($after->{kernel}, $before->{kernel},
                    'the kernel reports the same caught, ignored, blocked and pending sets');
                is_deeply($after->{blocked}, $before->{blocked}, 'signal mask unchanged');
            });
            $SIG{$TIMER_SIG_NAME} = 'DEFAULT';
            close $fh;
        };
    }

    subtest 'SIGRTMIN+5 still acts as before once the wait is over' => sub {
        my $path = scratch_file();
        my $h    = holder($path, LOCK_EX);

        # Default disposition: the signal still terminates the process.
        my $c = spawn(sub {
            my ($parent) = @_;
            $SIG{$TIMER_SIG_NAME} = 'DEFAULT';
            open my $fh, '<', $path or die "open $path: $!";
            my $r = flock($fh, LOCK_EX, 0.2);
            $parent->say("timed out $r " . ($! + 0));
            kill $TIMER_SIG, $$;
            $parent->say('survived');
        });
        is($c->hear, "timed out 0 $ETIMEDOUT", 'child: timed wait ended');
        is($c->hear, undef, 'child: SIGRTMIN+5 sent afterwards ended it');
        my $status = $c->wait;
        is($status & 127, $TIMER_SIG, 'killed by SIGRTMIN+5, the default action');

        # A user handler: it runs when the signal comes afterwards.
        $c = spawn(sub {
            my ($parent) = @_;
            my $ran = 0;
            $SIG{$TIMER_SIG_NAME} = sub { $ran++ };
            open my $fh, '<', $path or die "open $path: $!";
            my $r = flock($fh, LOCK_EX, 0.2);
            $parent->say("timed out $r " . ($! + 0) . " $ran");
            kill $TIMER_SIG, $$;
            $parent->say("handler ran $ran");
        });
        is($c->hear, "timed out 0 $ETIMEDOUT 0", 'child: timed wait ended, handler not run by the timer');
        is($c->hear, 'handler ran 1', "child: the user's handler runs afterwards");
        is($c->wait, 0, 'child exited cleanly');

        is(release_and_wait($h), 0, 'holder released');
    };

    subtest 'a pending, blocked SIGRTMIN+5 survives a timed wait' => sub {
        my $path = scratch_file();
        my $fh   = open_lock($path);
        my $ran  = 0;
        $SIG{$TIMER_SIG_NAME} = sub { $ran++ };
        my $set = POSIX::SigSet->new($TIMER_SIG);
        POSIX::sigprocmask(POSIX::SIG_BLOCK(), $set) or die "sigprocmask: $!";
        kill $TIMER_SIG, $$;
        with_holder($path, LOCK_EX, sub {
            my ($r, $err) = timed_flock($fh, LOCK_EX, 0.2);
            is($r, 0, 'timed out');
            is($err, $ETIMEDOUT, '$! is ETIMEDOUT');
        });
        my $pending = POSIX::SigSet->new;
        POSIX::sigpending($pending);
        my $still_pending = $pending->ismember($TIMER_SIG) ? 1 : 0;
        POSIX::sigprocmask(POSIX::SIG_UNBLOCK(), $set) or die "sigprocmask: $!";
        $SIG{$TIMER_SIG_NAME} = 'DEFAULT';
        is($still_pending, 1, 'the signal is still pending after the wait');
        is($ran, 1, "the user's handler runs once it is unblocked");
        close $fh;
    };
}

subtest 'the signal mask is left as it was' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    with_holder($path, LOCK_EX, sub {
        my $before = blocked_signals();
        my ($r, $err) = timed_flock($fh, LOCK_EX, 0.2);
        is($r, 0, 'timed out');
        is_deeply(blocked_signals(), $before, 'mask unchanged');

        my $set = POSIX::SigSet->new($TIMER_SIG, POSIX::SIGUSR2());
        my $old = POSIX::SigSet->new;
        POSIX::sigprocmask(POSIX::SIG_BLOCK(), $set, $old) or die "sigprocmask: $!";
        $before = blocked_signals();
        my $kernel_before = kernel_signals();
        ok(scalar(grep { $_ == $TIMER_SIG } @$before), 'SIGRTMIN+5 blocked by the caller');
        my $took;
        ($r, $err, $took) = timed_flock($fh, LOCK_EX, 0.3);
        my $after        = blocked_signals();
        my $kernel_after = kernel_signals();
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old) or die "sigprocmask: $!";
        is($r, 0, 'with SIGRTMIN+5 blocked: returns 0');
        is($err, $ETIMEDOUT, 'with SIGRTMIN+5 blocked: $! is ETIMEDOUT');
        cmp_ok($took, '>=', 0.3, 'with SIGRTMIN+5 blocked: after the timeout');
        cmp_ok($took, '<', $SAFETY, 'with SIGRTMIN+5 blocked: and promptly');
        is_deeply($after, $before, 'SIGRTMIN+5 (and SIGUSR2) still blocked, mask unchanged');
        is_deeply($kernel_after, $kernel_before, 'the kernel agrees');
        SKIP: {
            skip 'no /proc/self/status', 1 unless exists $kernel_after->{SigPnd};
            is(kernel_bit($kernel_after->{SigPnd}, $TIMER_SIG)
                 + kernel_bit($kernel_after->{ShdPnd}, $TIMER_SIG),
               0, 'no timer signal left pending');
        }
    });
    close $fh;
};

is(waitpid(-1, POSIX::WNOHANG()), -1, 'every child was reaped');

done_testing;
