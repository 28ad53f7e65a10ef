#!perl
# lock_file_async and lock_range_async: waiters that end with a readable
# handle. Every claim about a lock is checked from another process through
# the kernel (flock(2) probes, Python's fcntl.lockf, /proc/locks), never
# from the waiter's or the guard's opinion of itself. LOCKER_TEST_SEED
# repeats the random release order.
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use IO::Select;
use POSIX ();
use Time::HiRes ();
use lib 't/lib';
use LockerTest qw(spawn fork_peer probe holder range_holder scratch_file fd_count task_count
  now in_path open_rw release_holder release_and_wait release_on_waiter blocked_requests lockf_probe);
use File::Locker qw(:flock lock_file lock_range lock_file_async lock_range_async);

my $SEED = $ENV{LOCKER_TEST_SEED} // (time ^ $$);
diag "seed $SEED; rerun with LOCKER_TEST_SEED=$SEED";
srand $SEED;

my ($EINPROGRESS, $ETIMEDOUT, $ECANCELED, $EWOULDBLOCK, $EALREADY, $EPERM, $ENOENT, $EBADF)
  = map { POSIX->can($_)->() } qw(EINPROGRESS ETIMEDOUT ECANCELED EWOULDBLOCK EALREADY EPERM ENOENT EBADF);
my $PYTHON = in_path('python3');

# ---- helpers ------------------------------------------------------------

# Blocks (select, no timeout but the safety net) until FH is readable.
sub wait_readable {
    my ($fh, $what) = @_;
    my @ready = IO::Select->new($fh)->can_read($LockerTest::PATIENCE);
    die "$what: never became readable\n" unless @ready;
    return 1;
}

sub readable_now { scalar IO::Select->new($_[0])->can_read(0) }

# The guard of a waiter, and $! right after.
sub take_guard {
    my ($w) = @_;
    local $!;
    $! = 0;
    my $g = $w->guard;
    return ($g, $! + 0);
}

# Whether /proc/locks lists a blocked request ("->") on INO: a flock(2)
# request of PID, or any OFD/POSIX request (OFD waiters show pid -1).
sub blocked_listed {
    my ($ino, $pid) = @_;
    -r '/proc/locks' or die "cannot read /proc/locks\n";
    return scalar grep { $_->{kind} ne 'FLOCK' || !defined $pid || $_->{pid} == $pid } blocked_requests($ino);
}

# Waits until the kernel lists our blocked request on PATH: the waiter's
# thread is then in the kernel, not about to try.
sub wait_blocked {
    my ($path, $flock) = @_;
    my $ino     = (stat $path)[1];
    my $give_up = now() + $LockerTest::PATIENCE;
    until (blocked_listed($ino, $flock ? $$ : undef)) {
        die "never blocked on $path\n" if now() > $give_up;
        select undef, undef, undef, 0.001;
    }
    return 1;
}

# Signal dispositions and this thread's mask, as the kernel reports them.
sub signal_state {
    my %s;
    open my $fh, '<', "/proc/$$/task/$$/status" or die "status: $!";
    while (<$fh>) { $s{$1} = $2 if /^(SigBlk|SigIgn|SigCgt):\s*([0-9a-f]+)/ }
    return \%s;
}

my $base_fds   = fd_count();
my $base_tasks = task_count();

# ---- free locks -----------------------------------------------------------

{
    my $path = scratch_file();
    my $w = lock_file_async($path, LOCK_EX);
    isa_ok($w, 'File::Locker::Waiter', 'lock_file_async on a free file');
    ok($w->is_ready, 'free lock: ready at once');
    ok(readable_now($w->fh), 'free lock: fh readable at once');
    my ($g, $err) = take_guard($w);
    isa_ok($g, 'File::Locker::Guard', 'free lock: the guard');
    is(probe($path, LOCK_SH), 0, 'free lock: another process cannot take the file');
    my ($again, $again_err) = take_guard($w);
    ok(!defined $again, 'the guard is handed out once');
    is($again_err, $EALREADY, '... later calls give EALREADY');
    undef $g;
    my $first = lock_file_async($path, LOCK_EX)->guard;
    ok($first, 'a waiter dropped at once still hands out its guard first');
    undef $first;
    is(probe($path, LOCK_EX), 1, 'free lock: released with the guard');
}

if ($PYTHON) {
    my $path = scratch_file();
    open my $fh, '+<', $path or die;
    my $w = lock_range_async($fh, LOCK_EX, 100, 10);
    ok($w->is_ready, 'lock_range_async on a free range: ready at once');
    my $g = $w->guard;
    is($g && $g->offset, 100, 'range guard: offset');
    is($g && $g->length, 10, 'range guard: length');
    is(lockf_probe($path, LOCK_SH, 100, 10), 'busy', 'range guard: held, as fcntl.lockf sees it');
    is(lockf_probe($path, LOCK_EX, 110, 10), 'free', 'range guard: only its bytes');
    undef $g;
    is(lockf_probe($path, LOCK_EX, 100, 10), 'free', 'range guard: released');
}

# ---- busy locks -----------------------------------------------------------

{
    my $path = scratch_file();
    my $holder = release_on_waiter($path);
    my $w = lock_file_async($path, LOCK_EX);
    ok(!$w->is_ready, 'busy lock: not ready');
    my ($g, $err) = take_guard($w);
    ok(!defined $g, 'busy lock: no guard yet');
    is($err, $EINPROGRESS, '... $! is EINPROGRESS');
    ok(!readable_now($w->fh), 'busy lock: fh not readable');
    $holder->say($$);    # the holder lets go once it sees our request in the kernel
    $holder->expect('released');
    wait_readable($w->fh, 'busy lock');
    ok($w->is_ready, 'busy lock: ready after the holder let go');
    ($g, $err) = take_guard($w);
    ok($g && $g->is_locked, 'busy lock: granted');
    is(probe($path, LOCK_SH), 0, 'busy lock: now ours, as another process sees it');
    $holder->wait;
    undef $g;
    undef $w;
    is(probe($path, LOCK_EX), 1, 'busy lock: released with the guard');
}

if ($PYTHON) {
    my $path = scratch_file();
    my $holder = range_holder($path, LOCK_SH, 0, 100);
    my $w = lock_range_async($path, LOCK_EX, 50, 100);
    ok(!$w->is_ready, 'busy range: not ready');
    wait_blocked($path);
    ok(!readable_now($w->fh), 'busy range: blocked in the kernel, not readable');
    release_and_wait($holder);
    wait_readable($w->fh, 'busy range');
    my $g = $w->guard;
    ok($g && $g->is_locked, 'busy range: granted');
    is(lockf_probe($path, LOCK_SH, 140, 1), 'busy', 'busy range: held, as fcntl.lockf sees it');
    is(lockf_probe($path, LOCK_SH, 0, 50), 'free', 'busy range: only its bytes');
}

# LOCK_NB and timeout 0: one try, settled at once.
{
    my $path = scratch_file();
    my $holder = holder($path, LOCK_EX);
    for my $case ([ 'LOCK_NB', LOCK_EX | LOCK_NB ], [ 'timeout 0', LOCK_EX, timeout => 0 ]) {
        my ($name, @args) = @$case;
        my $w = lock_file_async($path, @args);
        ok($w->is_ready, "$name on a busy lock: ready at once");
        my ($g, $err) = take_guard($w);
        ok(!defined $g, "$name: no guard");
        is($err, $EWOULDBLOCK, "$name: \$! is EWOULDBLOCK");
    }
    release_and_wait($holder);
}

# ---- timeout, cancel, drop --------------------------------------------------

for my $how (qw(timeout cancel drop)) {
    for my $kind (qw(file range)) {
        next if $kind eq 'range' && !$PYTHON;
        my $path = scratch_file();
        my $holder = $kind eq 'file' ? holder($path, LOCK_EX) : range_holder($path, LOCK_EX, 0, 10);
        my @timeout = $how eq 'timeout' ? (timeout => 0.2) : ();
        my $w = $kind eq 'file'
          ? lock_file_async($path, LOCK_EX, @timeout)
          : lock_range_async($path, LOCK_EX, 0, 10, @timeout);
        my $fh = $w->fh;
        unless ($how eq 'timeout') {
            wait_blocked($path, $kind eq 'file');
            ok(task_count() > $base_tasks, "$how ($kind): a thread waits");
        }
        if ($how eq 'timeout') {
            wait_readable($fh, "$how ($kind)");
        }
        elsif ($how eq 'cancel') {
            ok($w->cancel, "$how ($kind): cancel returns true");
            ok(readable_now($fh), "$how ($kind): fh readable after cancel");
        }
        else {
            undef $w;
        }
        if ($w) {
            ok($w->is_ready, "$how ($kind): ready");
            my ($g, $err) = take_guard($w);
            ok(!defined $g, "$how ($kind): no guard");
            is($err, $how eq 'timeout' ? $ETIMEDOUT : $ECANCELED, "$how ($kind): \$! is "
                . ($how eq 'timeout' ? 'ETIMEDOUT' : 'ECANCELED'));
            undef $w;
        }
        is(task_count(), $base_tasks, "$how ($kind): the thread is gone");
        ok(!blocked_listed((stat $path)[1], $kind eq 'file' ? $$ : undef),
            "$how ($kind): no request of ours left in the kernel");
        release_and_wait($holder);
        if ($kind eq 'file') {
            is(probe($path, LOCK_EX), 1, "$how ($kind): another process can take the lock");
        }
        else {
            is(lockf_probe($path, LOCK_EX, 0, 10), 'free', "$how ($kind): another process can take the range");
        }
        close $fh;
    }
}

# Cancel racing with the grant: the holder lets go while we cancel. Either
# way, nothing is left locked.
{
    my $path = scratch_file();
    my ($granted, $cancelled) = (0, 0);
    for my $round (1 .. 20) {
        my $holder = holder($path, LOCK_EX);
        my $w = lock_file_async($path, LOCK_EX);
        $holder->say('release');
        $w->cancel if rand() < 0.9;
        my $g = $w->guard;
        $g ? $granted++ : $cancelled++;
        undef $g;
        undef $w;
        $holder->expect('released');
        $holder->wait;
        is(probe($path, LOCK_EX), 1, "race round $round: nothing left locked") or last;
    }
    note("race: $granted granted, $cancelled cancelled");
    is(task_count(), $base_tasks, 'race: no thread left');
}

# ---- many waiters, released in a random order ---------------------------------

{
    my $n = 8;
    my @paths = map { scratch_file() } 1 .. $n;
    my $ranges = scratch_file();
    my (@holders, @waiters);
    for my $i (0 .. $n - 1) {
        if ($i % 2 || !$PYTHON) {
            push @holders, holder($paths[$i], LOCK_EX);
            push @waiters, lock_file_async($paths[$i], LOCK_SH);
        }
        else {
            push @holders, range_holder($ranges, LOCK_EX, $i * 10, 10);
            push @waiters, lock_range_async($ranges, LOCK_EX, $i * 10, 10);
        }
    }
    is(task_count(), $base_tasks + $n, "$n waiters: one thread each");
    my @order = map { $_->[1] } sort { $a->[0] <=> $b->[0] } map { [ rand(), $_ ] } 0 .. $n - 1;
    note("release order @order");
    my (@ready, @guards);
    my %fileno = map { fileno($waiters[$_]->fh) => $_ } 0 .. $n - 1;
    my $pending = IO::Select->new(map { $_->fh } @waiters);
    for my $i (@order) {
        release_and_wait($holders[$i]);
        my @now = $pending->can_read($LockerTest::PATIENCE);
        push @ready, join ',', sort { $a <=> $b } map { $fileno{ fileno $_ } } @now;
        $pending->remove(@now);
        push @guards, map { $waiters[ $fileno{ fileno $_ } ]->guard } @now;
    }
    is("@ready", "@order", 'waiters become ready in the order their holders let go');
    is(scalar(grep { $_ && $_->is_locked } @guards), $n, 'every waiter got its guard');
    my $busy = 0;
    for my $i (0 .. $n - 1) {
        $busy += $i % 2 || !$PYTHON ? !probe($paths[$i], LOCK_EX)
                                    : lockf_probe($ranges, LOCK_SH, $i * 10, 10) eq 'busy';
    }
    is($busy, $n, 'every lock held, as other processes see it');
    @waiters = ();
    is(task_count(), $base_tasks, 'no thread left once the waiters are gone');
    ok($guards[0]->is_locked, '... and their guards still hold');
    @guards  = ();
    @holders = ();
    is(fd_count(), $base_fds, 'no descriptor left');
}

# ---- composition with the process's other guards --------------------------------

if ($PYTHON) {
    my $path = scratch_file();
    my $fh = open_rw($path);
    my $shared = lock_range($fh, LOCK_SH, 0, 100) or die "lock_range: $!";
    my $w = lock_range_async($fh, LOCK_EX, 20, 10);
    my $ex = $w->guard;
    ok($ex, 'an exclusive waiter on our own shared range of the same handle is granted');
    is(lockf_probe($path, LOCK_SH, 20, 10), 'busy', '... and holds it exclusively');
    undef $ex;
    is(lockf_probe($path, LOCK_SH, 20, 10), 'free', 'its release leaves the shared guard');
    is(lockf_probe($path, LOCK_EX, 20, 10), 'busy', '... holding the bytes shared');
    my $other = open_rw($path);
    my $w2 = lock_range_async($other, LOCK_EX, 20, 10, timeout => 0.1);
    wait_readable($w2->fh, 'another handle');
    my ($g, $err) = take_guard($w2);
    is($err, $ETIMEDOUT, 'another handle of ours conflicts: ETIMEDOUT');

    # Without a timeout the wait ends when we let go ourselves (the
    # classic fallback would call a blocking wait on our own lock EDEADLK).
    my $w3 = lock_range_async($other, LOCK_EX, 0, 10);
    ok(!$w3->is_ready, 'a waiter for bytes another handle of ours holds waits');
    undef $shared;
    wait_readable($w3->fh, 'our own holder');
    ($g, $err) = take_guard($w3);
    ok($g && $g->is_locked, '... and gets them when our other guard lets go');
    is(lockf_probe($path, LOCK_SH, 0, 10), 'busy', '... as another process sees it');
}

# ---- fork with a pending waiter ---------------------------------------------------

{
    my $path = scratch_file();
    my $holder = holder($path, LOCK_EX);
    my $before = signal_state();
    my $w = lock_file_async($path, LOCK_EX);
    my $fh = $w->fh;
    wait_blocked($path, 1);
    my $child = fork_peer(sub {
        my ($parent) = @_;
        local $! = 0;
        my @report = ($w->is_ready ? 'ready' : 'pending');
        my $g = $w->guard;
        push @report, defined $g ? 'guard' : 'undef-' . ($! + 0);
        $w->cancel;
        my $after = signal_state();
        push @report, $after->{SigCgt} eq $before->{SigCgt} ? 'dispositions-kept' : "SigCgt-$after->{SigCgt}";
        undef $w;
        my $mine = lock_file($path, LOCK_EX | LOCK_NB);
        push @report, $mine ? 'child-locked' : 'child-busy';
        $parent->say("@report");
        exit 0;    # global destruction with the parent's waiter copied
    });
    is($child->hear, "pending undef-$EPERM dispositions-kept child-busy",
        "a forked child's copy is inert: not ready, no guard (EPERM), cancel does nothing");
    is($child->wait, 0, 'the child exits cleanly');
    ok(!$w->is_ready, "the parent's wait goes on after the child let its copy go");
    ok(blocked_listed((stat $path)[1], $$), "... still blocked in the kernel");
    release_and_wait($holder);
    wait_readable($fh, 'after fork');
    my $g = $w->guard;
    ok($g && $g->is_locked, "the parent's waiter gets the lock");
    is(probe($path, LOCK_SH), 0, '... as another process sees it');
}

# ---- signal dispositions ------------------------------------------------------------

{
    my $path = scratch_file();
    my $usr1 = 0;
    local $SIG{USR1} = sub { $usr1++ };
    local $SIG{ALRM} = sub { die "alarm\n" };
    my $before = signal_state();
    my $holder = holder($path, LOCK_EX);
    my @waiters = map { lock_file_async($path, LOCK_SH) } 1 .. 3;
    push @waiters, lock_file_async($path, LOCK_SH, timeout => 30);
    wait_blocked($path, 1);
    my $during = signal_state();
    my $rt = POSIX::SIGRTMIN() + 5;
    my $bit = sub { my ($hex, $sig) = @_; my $v = 0; $v = $v * 16 + hex $_ for split //, $hex; ($v >> ($sig - 1)) & 1 };
    is($bit->($during->{SigCgt}, $rt), 1, 'while waits are pending the engine holds its real-time signal');
    my $mask = sub { my ($hex) = @_; my $v = 0; $v = $v * 16 + hex $_ for split //, $hex; $v & ~(1 << ($rt - 1)) };
    is($mask->($during->{SigCgt}), $mask->($before->{SigCgt}), '... and no other disposition changed');
    is($during->{SigBlk}, $before->{SigBlk}, "... and this thread's mask is unchanged");
    kill 'USR1', $$;
    is($usr1, 1, 'a Perl signal handler runs on the main thread while waits are pending');
    release_and_wait($holder);
    wait_readable($_->fh, 'signals') for @waiters;
    my @guards = map { $_->guard } @waiters;
    is(scalar(grep { $_ && $_->is_locked } @guards), 4, 'every waiter granted');
    @waiters = ();
    is_deeply(signal_state(), $before, 'dispositions and mask afterwards are exactly as before');
    is(alarm(0), 0, 'no alarm was set');
}

# ---- bad input ----------------------------------------------------------------------

{
    my $path = scratch_file();
    my @croaks = (
        [ sub { lock_file_async($path, 99) }, qr/^lock_file_async: MODE must be LOCK_SH or LOCK_EX/ ],
        [ sub { lock_file_async($path, LOCK_EX, bogus => 1) }, qr/^lock_file_async: unknown option 'bogus'/ ],
        [ sub { lock_file_async($path, LOCK_EX, timeout => -1) }, qr/^lock_file_async: timeout must be/ ],
        [ sub { lock_file_async($path, LOCK_EX, 'timeout') }, qr/^lock_file_async: odd number/ ],
        [ sub { lock_file_async(undef, LOCK_EX) }, qr/^lock_file_async: PATH or FH is undefined/ ],
        [ sub { lock_file_async('', LOCK_EX) }, qr/^lock_file_async: PATH is empty/ ],
        [ sub { lock_file_async([], LOCK_EX) }, qr/^lock_file_async: PATH or FH expected/ ],
        [ sub { open my $fh, '<', $path; lock_file_async($fh, LOCK_SH, create => 1) },
          qr/^lock_file_async: create, perms, follow_symlinks and unlink apply to a PATH only/ ],
        [ sub { lock_range_async($path, LOCK_EX, -1, 1) }, qr/^lock_range_async: OFFSET must be/ ],
        [ sub { lock_range_async($path, LOCK_EX, 0, 'x') }, qr/^lock_range_async: LENGTH must be/ ],
        [ sub { lock_range_async($path, LOCK_EX, 0) }, qr/Usage: File::Locker::lock_range_async/ ],
        [ sub { File::Locker::Waiter::guard(bless {}, 'File::Locker::Waiter') },
          qr/^File::Locker::Waiter::guard: invocant is not a File::Locker::Waiter object/ ],
        [ sub { File::Locker::Waiter::is_ready('x') }, qr/^File::Locker::Waiter::is_ready: invocant/ ],
        [ sub { File::Locker::Waiter::cancel(undef) }, qr/^File::Locker::Waiter::cancel: invocant/ ],
        [ sub { File::Locker::Waiter::fh([]) }, qr/^File::Locker::Waiter::fh: invocant/ ],
    );
    for my $c (@croaks) {
        my ($code, $re) = @$c;
        ok(!eval { $code->(); 1 }, "croaks: $re");
        like($@, $re, "... with the message");
    }
    open my $closed, '<', $path or die;
    close $closed;
    local $!;
    my $w = lock_file_async($closed, LOCK_EX);
    ok(!defined $w, 'a closed handle: undef');
    is($! + 0, $EBADF, '... with EBADF');
    $w = lock_file_async(scratch_file() . '.missing', LOCK_EX, create => 0);
    ok($w && $w->is_ready, 'a missing file: a waiter that has ended');
    my ($g, $err) = take_guard($w);
    is($err, $ENOENT, '... and the open error from guard');
    {
        open my $ro, '<', $path or die;
        $w = lock_range_async($ro, LOCK_EX, 0, 1);
        ($g, $err) = take_guard($w);
        is($err, $EBADF, 'LOCK_EX range through a read-only handle: EBADF from guard');
    }
    SKIP: {
        skip 'Storable is missing', 2 unless eval { require Storable; 1 };
        # In a child: Storable keeps a reference to an object whose hook
        # croaked, which would hold the waiter here.
        my $child = spawn(sub {
            my ($parent) = @_;
            my $w = lock_file_async($path, LOCK_SH);
            for my $how (qw(freeze dclone)) {
                my $ok = eval { Storable->can($how)->($w); 1 };
                $parent->say($ok ? 'copied'
                    : $@ =~ /^File::Locker::Waiter objects cannot be frozen or cloned/ ? 'croaked' : "other: $@");
            }
        });
        is($child->hear, 'croaked', 'Storable freeze of a waiter croaks, saying why');
        is($child->hear, 'croaked', 'Storable dclone of a waiter croaks, saying why');
        $child->wait;
    }
}

# ---- ithreads -------------------------------------------------------------------------

SKIP: {
    require Config;
    skip 'perl without ithreads', 3 unless $Config::Config{useithreads};
    require threads;
    my $path = scratch_file();
    my $holder = holder($path, LOCK_EX);
    my $w = lock_file_async($path, LOCK_EX);
    my $seen = threads->create(sub {
        ref($w) eq 'SCALAR' && !defined $$w ? 'undef' : ref($w) || 'plain'
    })->join;
    is($seen, 'undef', 'a new ithread gets no copy of a waiter (CLONE_SKIP)');
    ok(!$w->is_ready, "... and the parent's wait goes on");
    release_and_wait($holder);
    wait_readable($w->fh, 'ithreads');
    ok($w->guard, '... to the lock');
}

is(task_count(), $base_tasks, 'no thread left at the end');
is(fd_count(), $base_fds, 'no descriptor left at the end')
  or diag(join ' ', map { "$_:" . (readlink("/proc/self/fd/$_") // '?') } sort { $a <=> $b } grep { /^\d+$/ } do { opendir my $d, '/proc/self/fd'; readdir $d });

done_testing;
