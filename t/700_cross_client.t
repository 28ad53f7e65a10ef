#!perl
# Across machines: processes locking through one mount of a shared
# filesystem against processes locking through another mount of the same
# volume, each mount standing for a machine (LOCKER_TEST_DIRS=A:B; .ci/gluster
# sets up two GlusterFS clients that way). Every claim is checked from the
# other mount by a program that asks the kernel itself: util-linux flock(1)
# for whole-file locks, Python's fcntl.lockf for byte ranges.
#
# Covers flock, lock_file, lock_range and range_conflict (exclusive, shared,
# non-blocking, bounded waits), hand-off on release and on SIGKILL, an exact
# counter with two processes per mount (coherent => 1), lock_file(unlink =>
# 1) churn with zero overlaps, lock_holders and locker on both sides.
#
# LOCKER_CROSS_ROUNDS scales the counter and churn (default 100 rounds per
# process).

use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock O_CREAT O_EXCL O_WRONLY O_RDWR SEEK_SET);
use File::Temp ();
use IO::Select;
use POSIX qw(SIGKILL EWOULDBLOCK ETIMEDOUT);
use lib 't/lib';
use LockerTest qw(cross_dirs spawn slurp in_path now read_line);
use File::Locker qw(:flock flock lock_file lock_range range_conflict lock_holders);

my ($A, $B) = cross_dirs();
plan skip_all => "cross-client tests: $@" unless $A;
diag("locking through $A against $B");

my $FLOCK1 = in_path('flock');
my $PYTHON = in_path('python3');
plan skip_all => 'cross-client tests need util-linux flock(1) and python3'
  unless $FLOCK1 && $PYTHON;

$SIG{PIPE} = 'IGNORE';
my $ROUNDS = $ENV{LOCKER_CROSS_ROUNDS} || 100;
my @LOCKER = ($^X, '-Mblib', 'bin/locker');
my $serial = 0;

# A new lock file, as the pair (path through A, path through B).
sub shared_file {
    my ($content) = @_;
    my $name = 'f' . ++$serial;
    open my $fh, '>', "$A/$name" or die "create $A/$name: $!";
    print {$fh} $content // '';
    close $fh or die "close $A/$name: $!";
    return ("$A/$name", "$B/$name");
}

# Whether flock(1) -n with MODE on PATH is granted (1) or busy (0), from a
# separate program.
sub flock1_free {
    my ($path, $mode) = @_;
    my $rc = system $FLOCK1, '-n', '-E', 9, $mode == LOCK_EX ? '-x' : '-s', $path, 'true';
    return 1 if $rc == 0;
    return 0 if $rc >> 8 == 9;
    die "flock(1) on $path: status $rc";
}

# Whether Python's fcntl.lockf (classic POSIX F_SETLK) of MODE on [OFFSET,
# OFFSET+LENGTH) of PATH is granted (1) or busy (0), from a separate program.
my $PY_LOCKF = <<'PY';
import errno, fcntl, os, sys
path, mode, start, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR if mode == 'EX' else os.O_RDONLY)
try:
    fcntl.lockf(fd, (fcntl.LOCK_EX if mode == 'EX' else fcntl.LOCK_SH) | fcntl.LOCK_NB, length, start)
    print('granted')
except OSError as e:
    print('busy' if e.errno in (errno.EAGAIN, errno.EACCES) else 'error %d' % e.errno)
PY
sub lockf_free {
    my ($path, $mode, $start, $length) = @_;
    open my $py, '-|', $PYTHON, '-c', $PY_LOCKF, $path, $mode == LOCK_EX ? 'EX' : 'SH', $start, $length
      or die "python3: $!";
    my $answer = read_line($py, undef, 'python3') // '';
    close $py;
    return 1 if $answer eq 'granted';
    return 0 if $answer eq 'busy';
    die "lockf probe of $path: '$answer'";
}

# holder(CODE): a child that runs CODE (which returns a guard, or a true
# value after locking by hand), says "locked" or "failed ERRNO", lets go on
# "release" and answers "released". Returns its peer once it has answered.
sub holder {
    my ($code) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $held = $code->();
        unless ($held) { $parent->say('failed ' . ($! + 0)); return }
        $parent->say('locked');
        $parent->expect('release');
        $held->release if ref $held;
        undef $held;
        $parent->say('released');
    });
    my $word = $peer->hear // 'end of file';
    die "holder: $word\n" unless $word eq 'locked';
    return $peer;
}

sub let_go {
    my ($peer) = @_;
    $peer->say('release');
    $peer->expect('released');
    $peer->wait;
}

# The result of CODE and $! right after it.
sub with_errno {
    my ($code) = @_;
    local $! = 0;
    my $got = $code->();
    return ($got, $! + 0);
}

# --- flock and lock_file: each mode against each, from the other mount -----

for my $api (qw(flock lock_file)) {
    for my $held (LOCK_EX, LOCK_SH) {
        my $what = "$api " . ($held == LOCK_EX ? 'LOCK_EX' : 'LOCK_SH') . ' held through A';
        my ($pa, $pb) = shared_file();
        my $peer = holder(sub {
            if ($api eq 'flock') {
                open my $fh, '<', $pa or die "open $pa: $!";
                flock($fh, $held) or return;
                return bless { fh => $fh }, 'Holding';
            }
            return lock_file($pa, $held);
        });
        is(flock1_free($pb, LOCK_EX), 0, "$what: flock(1) -x through B is busy");
        is(flock1_free($pb, LOCK_SH), $held == LOCK_SH ? 1 : 0,
           "$what: flock(1) -s through B is " . ($held == LOCK_SH ? 'granted' : 'busy'));
        my ($guard, $err) = with_errno(sub { lock_file($pb, LOCK_EX | LOCK_NB) });
        ok(!$guard, "$what: lock_file LOCK_EX|LOCK_NB through B is refused");
        is($err, EWOULDBLOCK, "$what: ... with EWOULDBLOCK");
        ($guard, $err) = with_errno(sub { lock_file($pb, LOCK_SH, timeout => 0) });
        if ($held == LOCK_SH) {
            ok($guard, "$what: a shared lock through B is granted beside it");
            is(flock1_free($pa, LOCK_EX), 0, "$what: ... and then both hold it, flock(1) -x through A is busy");
        }
        else {
            ok(!$guard, "$what: a shared lock through B is refused");
            is($err, EWOULDBLOCK, "$what: ... with EWOULDBLOCK");
        }
        undef $guard;
        open my $fh, '<', $pb or die "open $pb: $!";
        my $t0 = now();
        my ($ok, $ferr) = with_errno(sub { flock($fh, LOCK_EX, 0.3) });
        my $waited = now() - $t0;
        ok(!$ok, "$what: flock with a timeout through B fails");
        is($ferr, ETIMEDOUT, "$what: ... with ETIMEDOUT");
        cmp_ok($waited, '>=', 0.29, "$what: ... not before its deadline");
        let_go($peer);
        is(flock1_free($pb, LOCK_EX), 1, "$what: released, flock(1) -x through B is granted");
    }
}

# A whole-file lock taken through B is seen through A the same way.
{
    my ($pa, $pb) = shared_file();
    my $guard = lock_file($pb, LOCK_EX) or die "lock_file: $!";
    is(flock1_free($pa, LOCK_SH), 0, 'lock_file LOCK_EX through B: flock(1) -s through A is busy');
    undef $guard;
    is(flock1_free($pa, LOCK_SH), 1, 'lock_file released through B: flock(1) -s through A is granted');
}

# --- lock_range and range_conflict ------------------------------------------

for my $held (LOCK_EX, LOCK_SH) {
    my $what = 'lock_range ' . ($held == LOCK_EX ? 'LOCK_EX' : 'LOCK_SH') . ' on bytes 100+50 through A';
    my ($pa, $pb) = shared_file('x' x 400);
    my $peer = holder(sub { lock_range($pa, $held, 100, 50) });
    is(lockf_free($pb, LOCK_EX, 120, 10), 0, "$what: lockf EX of bytes 120+10 through B is busy");
    is(lockf_free($pb, LOCK_SH, 140, 20), $held == LOCK_SH ? 1 : 0,
       "$what: lockf SH of bytes 140+20 through B is " . ($held == LOCK_SH ? 'granted' : 'busy'));
    is(lockf_free($pb, LOCK_EX, 150, 10), 1, "$what: lockf EX of the next bytes, 150+10, is granted");
    is(lockf_free($pb, LOCK_EX, 0, 100), 1, "$what: lockf EX of bytes 0+100 is granted");

    my ($guard, $err) = with_errno(sub { lock_range($pb, LOCK_EX | LOCK_NB, 149, 1) });
    ok(!$guard, "$what: lock_range LOCK_EX|LOCK_NB of byte 149 through B is refused");
    is($err, EWOULDBLOCK, "$what: ... with EWOULDBLOCK");
    ($guard, $err) = with_errno(sub { lock_range($pb, LOCK_EX, 0, 100, timeout => 0) });
    ok($guard, "$what: lock_range of the bytes before it through B is granted");
    undef $guard;
    my $t0 = now();
    ($guard, $err) = with_errno(sub { lock_range($pb, LOCK_EX, 100, 1, timeout => 0.3) });
    my $waited = now() - $t0;
    ok(!$guard, "$what: a bounded wait for byte 100 through B fails");
    is($err, ETIMEDOUT, "$what: ... with ETIMEDOUT");
    cmp_ok($waited, '>=', 0.29, "$what: ... not before its deadline");

    my $conflict = range_conflict($pb, LOCK_EX, 0, 0);
    ok($conflict, "$what: range_conflict LOCK_EX through B finds it");
    is_deeply([ @{ $conflict || {} }{qw(mode offset length)} ], [ $held, 100, 50 ],
              "$what: ... with its mode, offset and length");
    my $shared = range_conflict($pb, LOCK_SH, 0, 0);
    if ($held == LOCK_SH) { ok(!$shared, "$what: range_conflict LOCK_SH through B says free") }
    else                  { ok($shared, "$what: range_conflict LOCK_SH through B finds it") }
    ok(!range_conflict($pb, LOCK_EX, 150, 0), "$what: range_conflict after its end says free");
    my @holders = lock_holders($pb);
    ok((grep { $_->{mode} == $held && $_->{offset} == 100 && $_->{length} == 50 } @holders),
       "$what: lock_holders through B lists it, with its mode and range") or diag(explain(\@holders));
    let_go($peer);
    is(lockf_free($pb, LOCK_EX, 0, 0), 1, "$what: released, lockf EX of the whole file through B is granted");
}

# --- hand-off: release, and SIGKILL -----------------------------------------

# A waiter through B that blocks in lock_file and says "got" once granted.
sub waiter {
    my ($path, %opt) = @_;
    return spawn(sub {
        my ($parent) = @_;
        $parent->say('waiting');
        my $guard = lock_file($path, LOCK_EX, timeout => $LockerTest::PATIENCE);
        $parent->say($guard ? 'got' : 'failed ' . ($! + 0));
        $parent->hear;    # end of file
    });
}

for my $how (qw(release SIGKILL)) {
    my ($pa, $pb) = shared_file();
    my $peer = holder(sub { lock_file($pa, LOCK_EX) });
    my $w = waiter($pb);
    $w->expect('waiting');
    # The waiter is about to wait or waiting; it must not have been let in.
    ok(!IO::Select->new($w->{in})->can_read(0.2), "hand-off by $how: the waiter through B waits");
    if ($how eq 'release') {
        let_go($peer);
    }
    else {
        kill SIGKILL, $peer->pid;
        $peer->wait;
    }
    is($w->hear, 'got', "hand-off by $how: the waiter through B gets the lock");
    $w->wait;
}

# --- an exact counter: two processes per mount ------------------------------

for my $kind (qw(lock_file lock_range)) {
    my ($pa, $pb) = shared_file(sprintf "%019d\n", 0);
    my @peers;
    for my $path ($pa, $pa, $pb, $pb) {
        push @peers, spawn(sub {
            my ($parent) = @_;
            open my $fh, '+<', $path or die "open $path: $!";
            for (1 .. $ROUNDS) {
                my $g = $kind eq 'lock_file'
                  ? lock_file($fh, LOCK_EX, coherent => 1)
                  : lock_range($fh, LOCK_EX, 0, 20, coherent => 1);
                $g or die "$kind: $!";
                sysseek $fh, 0, SEEK_SET or die "seek: $!";
                defined sysread $fh, my $text, 20 or die "read: $!";
                sysseek $fh, 0, SEEK_SET or die "seek: $!";
                syswrite $fh, sprintf("%019d\n", $text + 1) or die "write: $!";
            }
            $parent->say('done');
        });
    }
    is($_->hear, 'done', "counter with $kind: a process finished") for @peers;
    $_->wait for @peers;
    my $guard = lock_range($pb, LOCK_SH, 0, 20, coherent => 1) or die "lock_range: $!";
    sysseek $guard->fh, 0, SEEK_SET;
    sysread $guard->fh, my $text, 20;
    is($text + 0, 4 * $ROUNDS, "counter with $kind(coherent => 1), 2 processes x 2 mounts: exact");
}

# --- lock_file(unlink => 1) under churn --------------------------------------

{
    my $name   = 'churn' . ++$serial;
    my $local  = File::Temp::tempdir('locker-journal-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my @peers;
    for my $dir ($A, $A, $B, $B) {
        push @peers, spawn(sub {
            my ($parent) = @_;
            my ($overlaps, $errors) = (0, 0);
            for (1 .. $ROUNDS) {
                my $g = lock_file("$dir/$name", LOCK_EX, unlink => 1);
                unless ($g) { $errors++; diag("lock_file: $!"); next }
                # Inside: claim a local token that nobody else may hold now.
                if (sysopen my $t, "$local/inside", O_CREAT | O_EXCL | O_WRONLY) { close $t }
                else { $overlaps++ }
                unlink "$local/inside" or $overlaps++;
                $g->release;
            }
            $parent->say("$overlaps $errors");
        });
    }
    my ($overlaps, $errors) = (0, 0);
    for my $peer (@peers) {
        my ($o, $e) = split ' ', $peer->hear // '-1 -1';
        $overlaps += $o;
        $errors   += $e;
        $peer->wait;
    }
    is($overlaps, 0, "lock_file(unlink => 1), 2 processes x 2 mounts x $ROUNDS rounds: no overlap");
    is($errors, 0, '... and no lock failed');
    ok(!-e "$A/$name", '... and the lock file is gone at the end');
}

# --- who holds it: lock_holders and locker, from both sides -----------------

{
    my ($pa, $pb) = shared_file();
    my $peer = holder(sub { lock_file($pa, LOCK_EX) });
    for my $path ($pb, $pa) {
        my @holders = lock_holders($path);
        ok(scalar @holders, "lock_holders($path) while held through A: not nobody");
        my ($h) = grep { $_->{mode} == LOCK_EX } @holders;
        ok($h, '... an exclusive holder') or diag(explain(\@holders));
        if ($h && ($h->{remote} // 0)) {
            ok(1, '... reported by the filesystem (remote => 1)');
            ok(!defined $h->{pid} || $h->{pid} > 0, '... with a pid only where the filesystem gives one');
        }
        elsif ($h) {
            is($h->{pid}, $peer->pid, '... seen in /proc/locks, with its pid');
        }
        my ($out, $code) = run_capture(@LOCKER, '--holders', $path);
        is($code, 0, "locker --holders $path: exits 0");
        like($out, qr/^\S+\s+\S+\s+exclusive\s/m, '... and lists an exclusive holder');
    }
    my (undef, $code) = run_capture(@LOCKER, '-n', '-E', 7, $pb, 'true');
    is($code, 7, 'locker -n through B while held through A: the conflict exit code');
    let_go($peer);
    is_deeply([ lock_holders($pb) ], [], 'lock_holders through B once released: nobody');
}

# locker holding through A, locker waiting through B.
{
    my ($pa, $pb) = shared_file();
    pipe my $in_r, my $in_w or die "pipe: $!";
    pipe my $out_r, my $out_w or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<&', $in_r or POSIX::_exit(120);
        open STDOUT, '>&', $out_w or POSIX::_exit(121);
        close $in_w;
        close $out_r;
        { no warnings 'exec'; exec @LOCKER, $pa, $^X, '-e', '$| = 1; print "locked\n"; <STDIN>' }
        POSIX::_exit(123);
    }
    close $in_r;
    close $out_w;
    is(read_line($out_r, undef, 'locker through A'), 'locked', 'locker through A runs its command under the lock');
    is(flock1_free($pb, LOCK_SH), 0, '... and flock(1) through B is busy');
    my (undef, $code) = run_capture(@LOCKER, '-w', '0.2', '-E', 7, $pb, 'true');
    is($code, 7, 'locker -w 0.2 through B: times out with the conflict code');
    my ($out, $code_v) = run_capture(@LOCKER, '-v', '-w', '1.2', '-E', 7, $pb, 'true');
    is($code_v, 7, 'locker -v -w 1.2 through B: times out too');
    like($out, qr/exclusive/, '... naming an exclusive holder while it waits') or diag($out);
    unlike($out, qr/no holder visible/, '... never "no holder visible"');
    close $in_w;
    waitpid $pid, 0;
    is($? >> 8, 0, 'locker through A: its command ended, exit 0');
    ($out, $code) = run_capture(@LOCKER, '-n', $pb, $^X, '-e', 'print "ran\n"');
    is($code, 0, 'locker -n through B, once free: runs');
    is($out, "ran\n", '... its command');
}

# Runs ARGV with stdin from /dev/null; returns (stdout and stderr, exit code).
sub run_capture {
    my @argv = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null' or POSIX::_exit(120);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(121);
        { no warnings 'exec'; exec { $argv[0] } @argv }
        POSIX::_exit(123);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($out, $? >> 8);
}

package Holding;
sub release { CORE::flock($_[0]{fh}, Fcntl::LOCK_UN()) }

package main;

done_testing;
