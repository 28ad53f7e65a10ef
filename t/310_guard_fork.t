#!perl
# Guards across fork and ithreads: a child (or grandchild) that lets its copy
# of a guard go -- scope exit, release, exit, an uncaught die, global
# destruction -- never releases the parent's lock; failed non-blocking
# attempts in another process leave the holder alone; new ithreads get no
# copy of a guard; two shared holders upgrading at once both finish.
#
# No subtests here: a child that dies must meet no eval on its way out, or it
# would carry on running the parent's tests.
use strict;
use warnings;

use Test::More;
use Config;
use POSIX ();
use Scalar::Util ();
use lib 't/lib';
use LockerTest qw(spawn fork_peer probe scratch_file scratch_dir fd_count read_line open_lock open_rw);
use File::Locker qw(:flock lock_file);

my $EWOULDBLOCK = POSIX::EWOULDBLOCK();

scratch_dir();    # made here, so that only this process ever removes it

# Like LockerTest::spawn, but CODE runs without an eval around it and the
# child then ends the ordinary way: `exit 0` runs END blocks and global
# destruction, and a die inside CODE is an uncaught exception.
sub fork_plain {
    my ($code) = @_;
    return fork_peer(sub { $code->(@_); exit 0 });
}

# Waits, with a safety alarm, until every process holding the write end of
# a raw pipe has exited (end of file on the read end).
sub wait_for_eof {
    my ($read_fd) = @_;
    local $SIG{ALRM} = sub { die "pipe still open after $LockerTest::PATIENCE s\n" };
    alarm $LockerTest::PATIENCE;
    my $buf;
    while (1) {
        my $n = POSIX::read($read_fd, $buf, 64);    # "0 but true" at end of file
        die "read: $!" unless defined $n;
        last if $n == 0;
    }
    alarm 0;
    POSIX::close($read_fd);
}

sub exit_text {
    my ($status) = @_;
    return 'no such child'              if $status == -1;
    return 'signal ' . ($status & 127)  if $status & 127;
    return 'exit ' . ($status >> 8);
}

# ---- a child lets its copy of the parent's guard go ------------------------

# What the child does with its copy, given a reference to the variable that
# holds the guard. Each says what it saw first, so the parent can check that
# the copy does not count as locked in the child.
my %child_lets_go = (
    'undef $g' => sub {
        my ($parent, $gref) = @_;
        undef $$gref;
        $parent->say('let go');
        $parent->expect('exit');
    },
    'scope exit' => sub {
        my ($parent, $gref) = @_;
        {
            my $mine = $$gref;
            undef $$gref;    # $mine is now the only reference
        }
        $parent->say('let go');
        $parent->expect('exit');
    },
    'release' => sub {
        my ($parent, $gref) = @_;
        my $first  = $$gref->release ? 1 : 0;
        my $second = $$gref->release ? 1 : 0;
        $parent->say("let go release $first $second locked " . ($$gref->is_locked ? 1 : 0));
        $parent->expect('exit');    # the guard object lives on until _exit
    },
    'exit 0' => sub {
        my ($parent, $gref) = @_;
        $parent->say('let go');
        exit 0;                     # the guard is still in the parent's lexical
    },
    'uncaught die' => sub {
        my ($parent, $gref) = @_;
        $parent->say('let go');
        die "expected death of a child holding a copy of a guard\n";
    },
    'global destruction' => sub {
        my ($parent, $gref) = @_;
        our $KEPT_GUARD = $$gref;    # only a package variable holds it now
        undef $$gref;
        $parent->say('let go');
        exit 0;
    },
);
my @hows = ('undef $g', 'scope exit', 'release', 'exit 0', 'uncaught die', 'global destruction');
my %process_ends = map { $_ => 1 } 'exit 0', 'uncaught die', 'global destruction';

# Takes a guard the way KIND says: on a PATH, or on a handle of PATH.
sub take_guard {
    my ($kind, $path, %options) = @_;
    if ($kind eq 'handle') {
        my $fh = open_rw($path);
        return (lock_file($fh, LOCK_EX), $fh);
    }
    return (lock_file($path, LOCK_EX, %options), undef);
}

for my $kind (qw(path handle)) {
    for my $how (@hows) {
        my $label = "lock_file on a $kind, child lets go by $how";
        my $path  = scratch_file();
        my ($g, $fh) = take_guard($kind, $path);
        ok($g && $g->is_locked, "$label: the parent holds the lock");
        my $run   = $process_ends{$how} ? \&fork_plain : \&spawn;
        my $child = $run->(sub {
            my ($parent) = @_;
            $parent->say('child is_locked ' . ($g->is_locked ? 1 : 0));
            $child_lets_go{$how}->($parent, \$g);
        });
        is($child->hear, 'child is_locked 0', "$label: is_locked is false in the child");
        my $let_go = $child->hear // 'nothing';
        if ($how eq 'release') {
            is($let_go, 'let go release 1 1 locked 0',
                "$label: release in the child is true (twice) and leaves is_locked false");
        }
        else {
            is($let_go, 'let go', "$label: the child let its copy go");
        }
        if (!$process_ends{$how}) {
            is(probe($path, LOCK_SH), 0, "$label: still held while the child lives on");
            $child->say('exit');
        }
        my $status = $child->wait;
        if ($how eq 'uncaught die') {
            ok(!($status & 127) && ($status >> 8) != 0,
                "$label: the child ended by its exception") or diag exit_text($status);
        }
        else {
            is(exit_text($status), 'exit 0', "$label: the child exited cleanly");
        }
        is(probe($path, LOCK_SH), 0, "$label: a third process still finds the lock busy");
        ok($g->is_locked, "$label: the parent's guard still says locked");
        ok($g->release, "$label: the parent releases");
        is(probe($path, LOCK_EX), 1, "$label: then the lock is free");
    }
}

# ---- a grandchild ---------------------------------------------------------

# The child forks a grandchild and exits first; the grandchild lives on, then
# exits too. A raw pipe whose write end only they hold tells when both are
# gone, whatever order Perl's destruction closes handles in.
for my $kind (qw(path handle)) {
    my $label = "lock_file on a $kind, child and grandchild";
    my $path  = scratch_file();
    my ($g, $fh) = take_guard($kind, $path);
    ok($g && $g->is_locked, "$label: the parent holds the lock");
    my ($gone_r, $gone_w) = POSIX::pipe() or die "pipe: $!";
    my $child = fork_plain(sub {
        my ($parent) = @_;
        POSIX::close($gone_r);
        my $grandchild = fork // die "fork: $!";
        if ($grandchild == 0) {
            $parent->say('grandchild is_locked ' . ($g->is_locked ? 1 : 0));
            $parent->expect('go');    # only the grandchild is left to read it
            $parent->say('grandchild exits');
            exit 0;                   # the guard goes in global destruction
        }
        POSIX::close($gone_w);        # the grandchild keeps its own copy
        $parent->say('child is_locked ' . ($g->is_locked ? 1 : 0));
        exit 0;
    });
    POSIX::close($gone_w);
    my @said = sort map { $child->hear // 'nothing' } 1 .. 2;
    is_deeply(\@said, [ 'child is_locked 0', 'grandchild is_locked 0' ],
        "$label: is_locked is false in both");
    waitpid $child->pid, 0;
    is(exit_text($?), 'exit 0', "$label: the child exited cleanly");
    is(probe($path, LOCK_SH), 0, "$label: still held after the child exited");
    $child->say('go');
    is($child->hear, 'grandchild exits', "$label: the grandchild exits");
    wait_for_eof($gone_r);
    is(probe($path, LOCK_SH), 0, "$label: still held after the grandchild exited");
    ok($g->is_locked, "$label: the parent's guard still says locked");
    $g->release;
    is(probe($path, LOCK_EX), 1, "$label: free once the parent releases");
}

# ---- unlink => 1: only the holder removes the file ---------------------------

for my $how ('undef $g', 'release', 'exit 0') {
    my $label = "unlink => 1, child lets go by $how";
    my $path  = scratch_dir() . '/unlinked-by-holder-only';
    my ($g) = take_guard('path', $path, unlink => 1);
    ok($g && $g->is_locked, "$label: the parent holds the lock");
    my $run   = $process_ends{$how} ? \&fork_plain : \&spawn;
    my $child = $run->(sub {
        my ($parent) = @_;
        $parent->say('child is_locked ' . ($g->is_locked ? 1 : 0));
        $child_lets_go{$how}->($parent, \$g);
    });
    is($child->hear, 'child is_locked 0', "$label: is_locked is false in the child");
    like($child->hear // 'nothing', qr/^let go/, "$label: the child let its copy go");
    $child->say('exit') unless $process_ends{$how};
    $child->wait;
    ok(-e $path, "$label: the lock file is still there");
    is(probe($path, LOCK_SH), 0, "$label: and still locked");
    $g->release;
    ok(!-e $path, "$label: the parent's release removes it");
}

# ---- failed non-blocking attempts elsewhere leave the holder alone ----------

{
    my $label = 'failed LOCK_NB attempts';
    my $path  = scratch_file();
    my $g     = lock_file($path, LOCK_EX);
    ok($g && $g->is_locked, "$label: the parent holds the lock");

    my $child = spawn(sub {
        my ($parent) = @_;
        {
            my $x = lock_file($path, LOCK_EX | LOCK_NB);
            $parent->say('path ' . (defined $x ? 'guard' : 'undef ' . ($! + 0)));
        }
        {
            my $x = lock_file($path, LOCK_SH, timeout => 0);
            $parent->say('path timeout 0 ' . (defined $x ? 'guard' : 'undef ' . ($! + 0)));
        }
        {
            my $fh = open_lock($path);
            {
                my $x = lock_file($fh, LOCK_EX | LOCK_NB);
                $parent->say('handle ' . (defined $x ? 'guard' : 'undef ' . ($! + 0)));
            }
            close $fh;
        }
        $parent->expect('exit');
    });
    is($child->hear, "path undef $EWOULDBLOCK", "$label: on PATH in a child: undef, EWOULDBLOCK");
    is($child->hear, "path timeout 0 undef $EWOULDBLOCK",
        "$label: timeout => 0 on PATH in a child: undef, EWOULDBLOCK");
    is($child->hear, "handle undef $EWOULDBLOCK",
        "$label: on the child's own handle: undef, EWOULDBLOCK");
    is(probe($path, LOCK_SH), 0, "$label: still held while the child lives on");
    $child->say('exit');
    is(exit_text($child->wait), 'exit 0', "$label: the child exited cleanly");
    is(probe($path, LOCK_SH), 0, "$label: still held after the child exited");

    my $fds = fd_count();
    {
        my $x = lock_file($path, LOCK_EX | LOCK_NB);
        ok(!defined $x, "$label: in the holder's own process, a new open of PATH is refused");
        is($! + 0, $EWOULDBLOCK, "$label: with EWOULDBLOCK");
    }
    is(fd_count(), $fds, "$label: and leaves no descriptor behind");
    is(probe($path, LOCK_SH), 0, "$label: still held after the same-process attempt");
    ok($g->is_locked, "$label: the guard still says locked");
    $g->release;
    is(probe($path, LOCK_EX), 1, "$label: free once the holder releases");
}

# ---- ithreads ---------------------------------------------------------------

# CLONE_SKIP: the new thread's copy of a reference to a guard points to an
# unblessed undef scalar (perlmod), so no guard exists there to release.
sub what_thread_sees {
    my ($copy) = @_;
    return 'undef' unless defined $copy;
    return 'not a reference' unless ref $copy;
    return join ', ', (Scalar::Util::blessed($copy) ? 'blessed ' . ref($copy) : 'unblessed'),
      (ref $copy eq 'SCALAR' && !defined $$copy ? 'undef' : 'something');
}

SKIP: {
    skip 'this perl has no ithreads', 12 unless $Config{useithreads};
    require threads;

    my $path = scratch_file();
    my $fh = open_rw($path);
    my $g = lock_file($path, LOCK_EX);
    ok($g && $g->is_locked, 'threads: the main thread holds a lock on a PATH');

    my $idle = threads->create(sub { 'idle' });
    is($idle->join, 'idle', 'threads: a thread that does nothing ran and was joined');
    is(probe($path, LOCK_SH), 0, 'threads: the lock is still held after the join');
    ok($g->is_locked, 'threads: the guard still says locked');

    my $peek = threads->create(sub { what_thread_sees($g) });
    is($peek->join, 'unblessed, undef',
        'threads: a thread whose closure holds the guard gets no guard, only undef behind the reference');
    is(probe($path, LOCK_SH), 0, 'threads: the lock is still held after that thread ended');
    ok($g->is_locked, 'threads: the guard still says locked after that thread ended');
    $g->release;
    is(probe($path, LOCK_EX), 1, 'threads: free once the main thread releases');

    my $hg = lock_file($fh, LOCK_EX);
    ok($hg && $hg->is_locked, 'threads: the main thread holds a lock on a handle');
    my $peek_h = threads->create(sub { what_thread_sees($hg) });
    is($peek_h->join, 'unblessed, undef', 'threads: a handle guard is not copied into a thread either');
    is(probe($path, LOCK_SH), 0, 'threads: the handle lock is still held after that thread ended');
    $hg->release;
    is(probe($path, LOCK_EX), 1, 'threads: free once the main thread releases the handle lock');
    close $fh;
}

# ---- two shared holders upgrade at once -----------------------------------

sub read_occupancy {
    my ($fh) = @_;
    sysseek($fh, 0, 0) or die "seek: $!";
    defined(sysread($fh, my $buf, 32)) or die "read: $!";
    return $buf =~ /(\d+)/ ? $1 : 0;
}

sub write_occupancy {
    my ($fh, $value) = @_;
    sysseek($fh, 0, 0) or die "seek: $!";
    syswrite($fh, sprintf('%20d', $value)) == 20 or die "write: $!";
}

# Each child holds LOCK_SH, says so, upgrades on "go", and reports on a
# pipe shared by both (so the parent learns who got LOCK_EX first without
# having to watch two pipes), with what it found in an occupancy file that
# each exclusive holder marks with its pid until it is told to release.
sub upgrade_race {
    my ($label, @upgrade_args) = @_;
    my $path      = scratch_file();
    my $occupancy = scratch_file();
    pipe(my $report_r, my $report_w) or die "pipe: $!";
    my @kids = map {
        spawn(sub {
            my ($parent) = @_;
            close $report_r;
            $report_w->autoflush(1);
            my $g = lock_file($path, LOCK_SH) or die "lock_file: $!";
            $parent->say('holding SH ' . ($g->mode == LOCK_SH ? 'mode SH' : 'mode ' . $g->mode));
            $parent->expect('go');
            my $ok   = $g->upgrade(@upgrade_args);
            my $err  = $ok ? 0 : $! + 0;
            my $seen = -1;
            my $occ;
            if ($ok) {
                sysopen($occ, $occupancy, POSIX::O_RDWR()) or die "open $occupancy: $!";
                $seen = read_occupancy($occ);
                write_occupancy($occ, $$);
            }
            print {$report_w} sprintf("%d upgraded %d errno %d mode %d locked %d seen %d\n",
                $$, $ok ? 1 : 0, $err, $g->mode, $g->is_locked ? 1 : 0, $seen);
            $parent->expect('release');
            if ($occ) {
                write_occupancy($occ, 0);
                close $occ;
            }
            $g->release;
            $parent->say('released');
        })
    } 1 .. 2;
    close $report_w;
    my %kid = map { $_->pid => $_ } @kids;

    is($_->hear, 'holding SH mode SH', "$label: child " . $_->pid . ' holds LOCK_SH') for @kids;
    is(probe($path, LOCK_SH), 1, "$label: a third process can share the lock");
    is(probe($path, LOCK_EX), 0, "$label: but not take it exclusively");
    $_->say('go') for @kids;

    my $want = sprintf 'upgraded 1 errno 0 mode %d locked 1 seen 0', LOCK_EX;
    my (@order, %told);
    for my $turn (qw(first second)) {
        my $line = read_line($report_r) // 'nothing';
        my ($pid, $rest) = $line =~ /^(\d+) (.*)$/ ? ($1, $2) : (0, $line);
        push @order, $pid;
        is($rest, $want, "$label: the $turn to finish upgraded to LOCK_EX, alone")
          or diag "report: $line";
        is(probe($path, LOCK_SH), 0, "$label: while the $turn holds it, it is exclusive");
        my $peer = $kid{$pid} or last;
        $peer->say('release');
        $told{$pid} = 1;
    }
    $told{ $_->pid }++ or $_->say('release') for @kids;    # only after a failure above
    isnt($order[0], $order[1], "$label: both children finished");
    for my $peer (@kids) {
        is($peer->hear, 'released', "$label: child " . $peer->pid . ' released');
        is(exit_text($peer->wait), 'exit 0', "$label: child " . $peer->pid . ' exited cleanly');
    }
    close $report_r;
    is(probe($path, LOCK_EX), 1, "$label: free at the end");
}

upgrade_race('two SH holders upgrade at once, no timeout');
upgrade_race('two SH holders upgrade at once, timeout => 5', timeout => 5);

is(waitpid(-1, POSIX::WNOHANG()), -1, 'every child was reaped');

done_testing;
