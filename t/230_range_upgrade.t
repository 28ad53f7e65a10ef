#!perl
# Concurrent upgrades of shared range locks never hang. Several processes
# each hold lock_range(PATH, LOCK_SH, ...) on the same or on overlapping
# ranges; told "go" together, each calls $g->upgrade. OFD locks have no
# deadlock detection, so an upgrade that waited while keeping its shared
# bytes would block forever against another one doing the same; the
# contract says two holders upgrading at once must never hang: one gets the
# exclusive lock, releases it, then the next.
#
# Each process, once upgraded, checks that it is alone on its bytes
# (occupancy markers), releases and reports; a failed upgrade reports false
# with $!. Reads from the processes carry LockerTest's alarm, so a hang
# fails the test instead of stalling it.

use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes ();
use File::Locker qw(:flock lock_range range_conflict);
use lib 't/lib';
use LockerTest qw(scratch_file spawn open_rw);

$SIG{PIPE} = 'IGNORE';

note 'range locks use ' . (File::Locker::_using_ofd_locks() ? 'open-file-description locks' : 'classic POSIX locks (fallback)');

my $CHUNK  = 50;    # occupancy is marked per 50-byte chunk of the locked file
my $CHUNKS = 8;
my $WIDTH  = 8;     # one marker: a pid as fixed-width decimal text

# Every process this test starts. Should the test die while some of them
# are stuck in a lock wait, they are killed on the way out rather than left
# behind.
my @spawned;
sub start { my $peer = spawn(@_); push @spawned, $peer->pid; return $peer }
my $parent_pid = $$;
END {
    local $?;    # keep the test's exit status
    if ($$ == $parent_pid) {
        for my $pid (@spawned) {
            next unless waitpid($pid, POSIX::WNOHANG()) == 0;
            kill 'KILL', $pid;
            waitpid $pid, 0;
        }
    }
}

sub read_marker {
    my ($fh, $k) = @_;
    sysseek($fh, $k * $WIDTH, 0) or die "seek: $!";
    my $got = sysread($fh, my $buf, $WIDTH);
    die "read marker $k: " . ($got // $!) unless defined $got && $got == $WIDTH;
    return $buf + 0;
}

sub write_marker {
    my ($fh, $k, $value) = @_;
    sysseek($fh, $k * $WIDTH, 0) or die "seek: $!";
    my $put = syswrite($fh, sprintf("%0${WIDTH}d", $value));
    die "write marker $k: $!" unless defined $put && $put == $WIDTH;
}

# One upgrader: holds LOCK_SH on [OFF, OFF+LEN) of PATH, says "held", waits
# for "go", upgrades with @OPTS, and reports one line:
#   upgraded locked=1 mode=2 violations=0     (then it has released)
#   failed ERRNO locked=0|1                   (then it has released)
sub upgrader {
    my ($path, $markers, $off, $len, @opts) = @_;
    return start(sub {
        my ($parent) = @_;
        my $occ = open_rw($markers);
        my $g = lock_range($path, LOCK_SH, $off, $len);
        unless ($g) { $parent->say('not held ' . ($! + 0)); return }
        $parent->say('held');
        $parent->expect('go');
        local $! = 0;
        my $ok    = $g->upgrade(@opts);
        my $errno = $! + 0;
        if (!$ok) {
            my $locked = $g->is_locked ? 1 : 0;
            $g->release;
            $parent->say("failed $errno locked=$locked");
            return;
        }
        my $locked = $g->is_locked ? 1 : 0;
        my $mode   = $g->mode;
        my @chunks = (int($off / $CHUNK) .. int(($off + $len - 1) / $CHUNK));
        my $violations = 0;
        for my $k (@chunks) {
            $violations++ if read_marker($occ, $k) != 0;
            write_marker($occ, $k, $$);
        }
        for my $k (@chunks) {
            $violations++ if read_marker($occ, $k) != $$;
            write_marker($occ, $k, 0);
        }
        $g->release;
        $parent->say("upgraded locked=$locked mode=$mode violations=$violations");
    });
}

# Runs one scenario: one upgrader per range in RANGES, all upgrading with
# OPTS at once.
sub scenario {
    my ($name, $ranges, @opts) = @_;
    subtest $name => sub {
        my $path    = scratch_file();
        my $markers = scratch_file();
        {
            my $fh = open_rw($markers);
            write_marker($fh, $_, 0) for 0 .. $CHUNKS - 1;
            close $fh;
        }
        my @peers;
        for my $r (@$ranges) {
            my $peer = upgrader($path, $markers, @$r, @opts);
            push @peers, $peer;
            is($peer->hear, 'held', "process " . $peer->pid . " holds LOCK_SH on [$r->[0],"
                  . ($r->[0] + $r->[1]) . ')') or do { reap(1, @peers); return };
        }
        my $c = range_conflict($path, LOCK_EX, 0, 0);
        is($c && $c->{mode}, LOCK_SH, 'before "go", the file is held shared');

        my $t0 = Time::HiRes::time();
        $_->say('go') for @peers;
        my $hung = 0;
        for my $i (0 .. $#peers) {
            my $peer = $peers[$i];
            my $line = eval { $peer->hear };
            if (!defined $line) {
                my $why = $@ || "end of file\n";
                chomp $why;
                fail("process " . $peer->pid . " reported: $why");
                $hung++;
                next;
            }
            like($line, qr/^(?:upgraded|failed) /, 'process ' . $peer->pid . ' reported within the patience of '
                  . "$LockerTest::PATIENCE s: $line");
            is($line, 'upgraded locked=1 mode=' . LOCK_EX . ' violations=0',
                'process ' . $peer->pid . ': the upgrade returned true, the guard was exclusive and alone on its bytes');
            if ($line =~ /^failed (\d+)/) {
                isnt($1, 0, '... a false upgrade came with $! set');
            }
        }
        note sprintf 'all reported after %.3f s', Time::HiRes::time() - $t0 unless $hung;
        reap($hung, @peers);
        is(range_conflict($path, LOCK_EX, 0, 0), undef, 'afterwards nothing is locked');
    };
}

# Waits for every process. After a hang (HUNG true) the ones still running
# are stuck in a lock wait: they are killed first. Otherwise each must exit
# on its own within the patience.
sub reap {
    my ($hung, @peers) = @_;
    for my $peer (@peers) {
        if ($hung && waitpid($peer->pid, POSIX::WNOHANG()) == 0) {
            kill 'KILL', $peer->pid;
            waitpid $peer->pid, 0;
            note 'process ' . $peer->pid . ' was killed';
            next;
        }
        my $status = eval {
            local $SIG{ALRM} = sub { die "timeout\n" };
            alarm $LockerTest::PATIENCE;
            my $s = $peer->wait;
            alarm 0;
            $s;
        };
        if (!defined $status) {
            kill 'KILL', $peer->pid;
            waitpid $peer->pid, 0;
            fail('process ' . $peer->pid . " did not exit within $LockerTest::PATIENCE s and was killed");
            next;
        }
        is($status, 0, 'process ' . $peer->pid . ' exited cleanly') unless $hung;
    }
}

for my $opts ([], [timeout => 5]) {
    my $how = @$opts ? 'upgrade(timeout => 5)' : 'upgrade()';
    scenario("two holders of [0,100), both $how",               [[0, 100], [0, 100]],            @$opts);
    scenario("holders of [0,100) and [50,150), both $how",      [[0, 100], [50, 100]],           @$opts);
    scenario("three holders of [0,100), all $how",              [[0, 100], [0, 100], [0, 100]],  @$opts);
    scenario("holders of [0,100), [50,150), [100,200), all $how", [[0, 100], [50, 100], [100, 100]], @$opts);
}

# A holder that does not upgrade: an upgrade that cannot be had fails with
# $! set and keeps its shared lock; one without a timeout waits for the
# holder to let go, and only then gets the exclusive lock.
subtest 'a holder keeps LOCK_SH on [0,100); the other upgrades [50,150)' => sub {
    my $path    = scratch_file();
    my $markers = scratch_file();
    {
        my $fh = open_rw($markers);
        write_marker($fh, 0, 0);
        close $fh;
    }
    my $keeper = start(sub {
        my ($parent) = @_;
        my $occ = open_rw($markers);
        my $g = lock_range($path, LOCK_SH, 0, 100) or die "lock_range: $!";
        $parent->say('held');
        $parent->expect('release');
        write_marker($occ, 0, 1);    # "released", written while still holding
        $g->release;
        $parent->say('released');
    });
    my $upgrader = start(sub {
        my ($parent) = @_;
        my $occ = open_rw($markers);
        my $g = lock_range($path, LOCK_SH, 50, 100) or die "lock_range: $!";
        $parent->say('held');
        while (defined(my $cmd = $parent->hear)) {
            my @opts = $cmd eq 'nb' ? (LOCK_NB) : $cmd eq 'timeout' ? (timeout => 0.2) : ();
            my $t0 = Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC());
            local $! = 0;
            my $ok    = $g->upgrade(@opts) ? 1 : 0;
            my $errno = $! + 0;
            my $took  = Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) - $t0;
            my $seen  = $ok ? read_marker($occ, 0) : '-';
            $parent->say(sprintf 'ok=%d errno=%d locked=%d mode=%d took=%.3f released_first=%s',
                $ok, $ok ? 0 : $errno, $g->is_locked ? 1 : 0, $g->mode, $took, $seen);
            last if $ok;
        }
        $g->release;
    });
    is($keeper->hear,   'held', 'keeper holds LOCK_SH on [0,100)');
    is($upgrader->hear, 'held', 'upgrader holds LOCK_SH on [50,150)');

    my %r;
    $upgrader->say('nb');
    %r = map { split /=/, $_, 2 } split ' ', ($upgrader->hear // '');
    is($r{ok}, 0, 'upgrade(LOCK_NB) returns false');
    is($r{errno}, POSIX::EWOULDBLOCK(), '... with $! EWOULDBLOCK');
    is("$r{locked} $r{mode}", '1 ' . LOCK_SH, '... and the guard still holds LOCK_SH');
    my $c = range_conflict($path, LOCK_EX, 120, 10);
    is($c && $c->{mode}, LOCK_SH, 'bytes [120,130), the upgrader\'s alone, are still held shared');

    $upgrader->say('timeout');
    %r = map { split /=/, $_, 2 } split ' ', ($upgrader->hear // '');
    is($r{ok}, 0, 'upgrade(timeout => 0.2) returns false');
    is($r{errno}, POSIX::ETIMEDOUT(), '... with $! ETIMEDOUT');
    cmp_ok($r{took} // 0, '>=', 0.2, '... not before 0.2 s');
    is("$r{locked} $r{mode}", '1 ' . LOCK_SH, '... and the guard holds LOCK_SH again');
    $c = range_conflict($path, LOCK_EX, 120, 10);
    is($c && $c->{mode}, LOCK_SH, 'bytes [120,130) are held shared again');

    $upgrader->say('wait');
    $keeper->say('release');
    is($keeper->hear, 'released', 'keeper released');
    %r = map { split /=/, $_, 2 } split ' ', ($upgrader->hear // '');
    is($r{ok}, 1, 'upgrade() without a timeout returns true once the keeper has let go');
    is("$r{locked} $r{mode}", '1 ' . LOCK_EX, '... and the guard is exclusive');
    is($r{released_first}, 1, '... granted only after the keeper released');
    is($keeper->wait,   0, 'keeper exited cleanly');
    is($upgrader->wait, 0, 'upgrader exited cleanly');
    is(range_conflict($path, LOCK_EX, 0, 0), undef, 'afterwards nothing is locked');
};

done_testing;
