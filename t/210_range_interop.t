#!perl
# lock_range uses fcntl record locks (open-file-description locks where the
# kernel has them, classic POSIX locks otherwise): it must exclude, and be
# excluded by, other programs' fcntl/lockf locks on the same bytes, in both
# directions -- File::FcntlLock in another Perl process and Python's
# fcntl.lockf -- and range_conflict must describe a foreign holder (mode,
# offset, length, pid) as fcntl(F_GETLK) does. Holders' locks must also stay
# visible to others while the holder itself uses PATH forms of the API on
# the same file.

use strict;
use warnings;

use Test::More;
use POSIX qw(EWOULDBLOCK EAGAIN EACCES ETIMEDOUT);
use IPC::Open2 qw(open2);
use File::Locker qw(:flock lock_range range_conflict);
use lib 't/lib';
use LockerTest qw(scratch_file spawn open_rw try_range in_path);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

my $OFD = File::Locker::_using_ofd_locks();
note 'range locks use ' . ($OFD ? 'open-file-description locks' : 'classic POSIX locks (fallback)');

my %NAME = (LOCK_SH() => 'LOCK_SH', LOCK_EX() => 'LOCK_EX');

my $HAVE_FCNTLLOCK = eval { require File::FcntlLock; 1 };
my $FCNTLLOCK_WHY  = $HAVE_FCNTLLOCK ? '' : 'File::FcntlLock cannot be loaded: ' . ($@ =~ /^(.*)/)[0];

# The fcntl constants File::FcntlLock exports are POSIX's.
my %FC = map { $_ => POSIX->can($_)->() } qw(F_GETLK F_SETLK F_RDLCK F_WRLCK F_UNLCK SEEK_SET);
sub fc { my ($name) = @_; return $FC{$name} // die "no constant $name" }

sub describe {
    my ($c) = @_;
    return 'undef' unless defined $c;
    return join ', ', map { "$_=" . ($c->{$_} // 'undef') } sort keys %$c;
}

# Checks a range_conflict answer against the expected mode, offset, length
# and pid.
sub conflict_is {
    my ($c, $want, $what) = @_;
    ok(ref $c eq 'HASH', "$what: range_conflict reports a conflict") or return diag('got ' . describe($c));
    is($c->{mode},   $want->{mode},   "$what: mode $NAME{$want->{mode}}");
    is($c->{offset}, $want->{offset}, "$what: offset $want->{offset}");
    is($c->{length}, $want->{length}, "$what: length $want->{length}");
    is($c->{pid},    $want->{pid},    "$what: pid " . ($want->{pid} // 'undef'));
}

# A child that holds a File::FcntlLock F_SETLK lock of TYPE ('F_WRLCK' or
# 'F_RDLCK') on [START, START+LEN) through its own handle of PATH, says
# 'locked' (or 'failed ERRNO'), and on 'release' unlocks with F_UNLCK and
# says 'released'; it keeps the handle until the parent closes the pipe.
sub fcntllock_holder {
    my ($path, $type, $start, $len) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $fh = open_rw($path);
        my $fs = File::FcntlLock->new(l_type => fc($type), l_whence => fc('SEEK_SET'),
                                      l_start => $start, l_len => $len);
        unless ($fs->lock($fh, fc('F_SETLK'))) {
            $parent->say('failed ' . ($fs->lock_errno // 0));
            return;
        }
        $parent->say('locked');
        $parent->expect('release');
        $fs->l_type(fc('F_UNLCK'));
        $fs->lock($fh, fc('F_SETLK')) or die "F_UNLCK: " . $fs->error;
        $parent->say('released');
        $parent->hear;
        close $fh;
    });
    return ($peer, $peer->hear // 'end of file');
}

# Runs one File::FcntlLock request in a fresh child on its own handle of
# PATH: F_SETLK of TYPE on [START, START+LEN) (released again at once if
# granted), then F_GETLK of TYPE on the same bytes. Returns a hash: setlk
# (1 granted, 0 refused), errno, and what F_GETLK left in the structure
# (type as a name, start, len, pid).
sub fcntllock_probe {
    my ($path, $type, $start, $len) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $fh = open_rw($path);
        my %type_name = map { fc($_) => $_ } qw(F_RDLCK F_WRLCK F_UNLCK);
        my $set = File::FcntlLock->new(l_type => fc($type), l_whence => fc('SEEK_SET'),
                                       l_start => $start, l_len => $len);
        my $got   = $set->lock($fh, fc('F_SETLK')) ? 1 : 0;
        my $errno = $got ? 0 : ($set->lock_errno // 0);
        if ($got) {
            $set->l_type(fc('F_UNLCK'));
            $set->lock($fh, fc('F_SETLK')) or die "F_UNLCK: " . $set->error;
        }
        my $get = File::FcntlLock->new(l_type => fc($type), l_whence => fc('SEEK_SET'),
                                       l_start => $start, l_len => $len);
        $get->lock($fh, fc('F_GETLK')) or die "F_GETLK: " . $get->error;
        $parent->say(join ' ', "setlk=$got", "errno=$errno",
            'type=' . ($type_name{ $get->l_type } // $get->l_type),
            'start=' . $get->l_start, 'len=' . $get->l_len, 'pid=' . $get->l_pid);
    });
    my $line = $peer->hear // '';
    my $status = $peer->wait;
    die "File::FcntlLock probe failed (status $status): '$line'\n" unless $status == 0 && $line =~ /^setlk=/;
    return { map { split /=/, $_, 2 } split ' ', $line };
}

# The pid F_GETLK reports for a lock this process holds through lock_range:
# -1 for an OFD lock, our pid for a classic POSIX lock.
my $OUR_GETLK_PID = $OFD ? -1 : $$;

sub refused_ok {
    my ($r, $what) = @_;
    is($r->{setlk}, 0, "$what: F_SETLK is refused");
    ok($r->{errno} == EAGAIN || $r->{errno} == EACCES, "$what: with EAGAIN or EACCES")
      or diag("errno $r->{errno}");
}

sub getlk_is {
    my ($r, $type, $start, $len, $what) = @_;
    is($r->{type},  $type,          "$what: F_GETLK reports $type");
    is($r->{start}, $start,         "$what: F_GETLK l_start $start");
    is($r->{len},   $len,           "$what: F_GETLK l_len $len");
    is($r->{pid},   $OUR_GETLK_PID, "$what: F_GETLK l_pid $OUR_GETLK_PID (" . ($OFD ? 'OFD lock' : 'classic lock') . ')');
}

SKIP: {
    skip $FCNTLLOCK_WHY, 4 unless $HAVE_FCNTLLOCK;

    subtest 'File::FcntlLock holds [10,20) in another process; lock_range asks' => sub {
        for my $type (qw(F_WRLCK F_RDLCK)) {
            my $held = $type eq 'F_WRLCK' ? LOCK_EX : LOCK_SH;
            my $path = scratch_file();
            my ($holder, $word) = fcntllock_holder($path, $type, 10, 10);
            is($word, 'locked', "child holds File::FcntlLock $type on [10,20)") or next;
            my $fh = open_rw($path);

            my ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, 15, 10);
            ok(!defined $g, "$type held: lock_range(FH, LOCK_EX|LOCK_NB, 15, 10) is undef");
            is($errno, EWOULDBLOCK, "$type held: \$! is EWOULDBLOCK");

            ($g, $errno) = try_range($path, LOCK_EX | LOCK_NB, 12, 1);
            ok(!defined $g, "$type held: lock_range(PATH, LOCK_EX|LOCK_NB, 12, 1) is undef");
            is($errno, EWOULDBLOCK, "$type held: PATH form, \$! is EWOULDBLOCK");

            ($g, $errno) = try_range($fh, LOCK_EX, 19, 5, timeout => 0.2);
            ok(!defined $g, "$type held: lock_range(FH, LOCK_EX, 19, 5, timeout => 0.2) is undef");
            is($errno, ETIMEDOUT, "$type held: \$! is ETIMEDOUT");

            my $want = { mode => $held, offset => 10, length => 10, pid => $holder->pid };
            conflict_is(range_conflict($fh, LOCK_EX, 15, 10), $want, "$type held, range_conflict(FH, LOCK_EX, 15, 10)");
            conflict_is(range_conflict($path, LOCK_EX, 0, 0), $want, "$type held, range_conflict(PATH, LOCK_EX, 0, 0)");
            if ($held == LOCK_EX) {
                conflict_is(range_conflict($fh, LOCK_SH, 19, 1), $want, "$type held, range_conflict(FH, LOCK_SH, 19, 1)");
                ($g, $errno) = try_range($fh, LOCK_SH | LOCK_NB, 5, 6);
                ok(!defined $g, "$type held: lock_range LOCK_SH|LOCK_NB on [5,11) is undef");
                is($errno, EWOULDBLOCK, "$type held: LOCK_SH, \$! is EWOULDBLOCK");
            }
            else {
                is(range_conflict($fh, LOCK_SH, 15, 10), undef, "$type held: range_conflict(FH, LOCK_SH, 15, 10) is undef");
                ($g, $errno) = try_range($fh, LOCK_SH | LOCK_NB, 15, 10);
                ok(defined $g, "$type held: lock_range LOCK_SH|LOCK_NB on [15,25) is granted") or diag("errno $errno");
                undef $g;
            }

            for my $r ([0, 10], [20, 10], [30, 0]) {
                my ($off, $len) = @$r;
                is(range_conflict($fh, LOCK_EX, $off, $len), undef, "$type held: range_conflict(FH, LOCK_EX, $off, $len) is undef");
                ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, $off, $len);
                ok(defined $g, "$type held: non-overlapping lock_range(FH, LOCK_EX|LOCK_NB, $off, $len) is granted")
                  or diag("errno $errno");
                undef $g;
            }

            $holder->say('release');
            is($holder->hear, 'released', "child released $type with F_UNLCK");
            is(range_conflict($fh, LOCK_EX, 15, 10), undef, "after the release: range_conflict is undef");
            ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, 15, 10);
            ok(defined $g, "after the release: lock_range(FH, LOCK_EX|LOCK_NB, 15, 10) is granted") or diag("errno $errno");
            undef $g;
            is($holder->wait, 0, 'holder exited cleanly');
            close $fh;
        }
    };

    subtest 'File::FcntlLock holds [100,EOF) in another process; range_conflict reports length 0' => sub {
        my $path = scratch_file();
        my ($holder, $word) = fcntllock_holder($path, 'F_WRLCK', 100, 0);
        is($word, 'locked', 'child holds File::FcntlLock F_WRLCK on [100,EOF)') or return;
        my $fh = open_rw($path);
        conflict_is(range_conflict($fh, LOCK_SH, 150, 1), { mode => LOCK_EX, offset => 100, length => 0, pid => $holder->pid },
            'F_WRLCK to EOF held, range_conflict(FH, LOCK_SH, 150, 1)');
        my ($g, $errno) = try_range($fh, LOCK_SH | LOCK_NB, 2**40, 1);
        ok(!defined $g, 'F_WRLCK to EOF held: lock_range(FH, LOCK_SH|LOCK_NB, 2**40, 1) is undef');
        is($errno, EWOULDBLOCK, '... with EWOULDBLOCK');
        ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, 0, 100);
        ok(defined $g, 'F_WRLCK to EOF held: lock_range(FH, LOCK_EX|LOCK_NB, 0, 100) is granted') or diag("errno $errno");
        undef $g;
        $holder->say('release');
        is($holder->hear, 'released', 'child released');
        is($holder->wait, 0, 'holder exited cleanly');
        close $fh;
    };

    subtest 'lock_range holds [10,20); File::FcntlLock asks from another process' => sub {
        for my $form (qw(FH PATH)) {
            for my $held (LOCK_EX, LOCK_SH) {
                my $path = scratch_file();
                my $fh   = open_rw($path);
                my $what = "lock_range($form, $NAME{$held}, 10, 10) held";
                my $g = lock_range($form eq 'FH' ? $fh : $path, $held, 10, 10);
                ok($g, "$what: taken") or do { diag("errno $!"); next };
                my $held_type = $held == LOCK_EX ? 'F_WRLCK' : 'F_RDLCK';

                my $r = fcntllock_probe($path, 'F_WRLCK', 15, 10);
                refused_ok($r, "$what, F_WRLCK on [15,25)");
                getlk_is($r, $held_type, 10, 10, "$what, F_WRLCK on [15,25)");

                $r = fcntllock_probe($path, 'F_RDLCK', 5, 6);
                if ($held == LOCK_EX) {
                    refused_ok($r, "$what, F_RDLCK on [5,11)");
                    getlk_is($r, 'F_WRLCK', 10, 10, "$what, F_RDLCK on [5,11)");
                }
                else {
                    is($r->{setlk}, 1, "$what: F_RDLCK on [5,11) is granted") or diag("errno $r->{errno}");
                    is($r->{type}, 'F_UNLCK', "$what: F_GETLK for F_RDLCK on [5,11) reports F_UNLCK");
                }

                for my $range ([0, 10], [20, 0]) {
                    $r = fcntllock_probe($path, 'F_WRLCK', @$range);
                    is($r->{setlk}, 1, "$what: F_WRLCK on non-overlapping offset $range->[0] length $range->[1] is granted")
                      or diag("errno $r->{errno}");
                    is($r->{type}, 'F_UNLCK', "$what: F_GETLK on offset $range->[0] length $range->[1] reports F_UNLCK");
                }

                ok($g->release, "$what: released");
                $r = fcntllock_probe($path, 'F_WRLCK', 15, 10);
                is($r->{setlk}, 1, "after the release: F_WRLCK on [15,25) is granted") or diag("errno $r->{errno}");
                close $fh;
            }
        }
    };

    # The holder's other work on the same file -- asking range_conflict by
    # PATH, a PATH lock that is refused, a PATH guard (with or without its
    # ->fh) that is let go -- opens and closes descriptors of the file inside
    # File::Locker. With classic POSIX locks the kernel drops all of a
    # process's locks on a file when any of its descriptors of that file is
    # closed; the contract says range locks survive the close of another
    # descriptor, in both modes.
    subtest 'the holder\'s lock survives its own PATH calls on the same file' => sub {
        my %action = (
            'range_conflict(PATH, LOCK_EX, 0, 0)' => sub {
                my ($path) = @_;
                my $c = range_conflict($path, LOCK_EX, 0, 0);
                ok(ref $c eq 'HASH', 'range_conflict(PATH) in the holder reports its own lock (a separate open)')
                  or diag('got ' . describe($c));
            },
            'a refused lock_range(PATH, LOCK_EX|LOCK_NB, 15, 10)' => sub {
                my ($path) = @_;
                my ($g, $errno) = try_range($path, LOCK_EX | LOCK_NB, 15, 10);
                ok(!defined $g, 'lock_range(PATH, LOCK_EX|LOCK_NB, 15, 10) in the holder is refused');
                is($errno, EWOULDBLOCK, '... with EWOULDBLOCK');
            },
            'a PATH guard on [40,50), then let go' => sub {
                my ($path) = @_;
                my $g = lock_range($path, LOCK_EX, 40, 10);
                ok($g, 'lock_range(PATH, LOCK_EX, 40, 10) in the holder is granted') or return diag("errno $!");
                undef $g;
            },
            'a PATH guard on [40,50) used through ->fh, then let go' => sub {
                my ($path) = @_;
                my $g = lock_range($path, LOCK_EX, 40, 10);
                ok($g, 'lock_range(PATH, LOCK_EX, 40, 10) in the holder is granted') or return diag("errno $!");
                my $io = $g->fh;
                ok($io && sysseek($io, 40, 0) && syswrite($io, 'x') == 1, 'write through ->fh under the lock');
                undef $io;
                undef $g;
            },
        );
        for my $name (sort keys %action) {
            my $path = scratch_file();
            my $fh   = open_rw($path);
            my $g    = lock_range($fh, LOCK_EX, 10, 10);
            ok($g, "lock_range(FH, LOCK_EX, 10, 10) held") or do { diag("errno $!"); next };
            my $r = fcntllock_probe($path, 'F_WRLCK', 10, 10);
            is($r->{setlk}, 0, "before $name: F_WRLCK on [10,20) from another process is refused");
            $action{$name}->($path);
            $r = fcntllock_probe($path, 'F_WRLCK', 10, 10);
            is($r->{setlk}, 0, "after $name: F_WRLCK on [10,20) from another process is still refused");
            is($r->{type}, 'F_WRLCK', "after $name: F_GETLK still reports F_WRLCK on [10,20)");
            ok($g->release, 'holder released');
            close $fh;
        }
    };
}

# ---- Python's fcntl.lockf -------------------------------------------------

# Reads commands on stdin, one a line, and answers each with one line:
#   lock ex|sh START LEN   fcntl.lockf(..., LOCK_EX|LOCK_NB or LOCK_SH|LOCK_NB)
#                          -> "ok" or "busy ERRNO"
#   unlock START LEN       -> "ok"
# It says "ready PID" first.
my $PYTHON = <<'PY';
import fcntl, os, sys
f = open(sys.argv[1], 'r+b')
print('ready', os.getpid(), flush=True)
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == 'lock':
        flag = fcntl.LOCK_EX if words[1] == 'ex' else fcntl.LOCK_SH
        try:
            fcntl.lockf(f, flag | fcntl.LOCK_NB, int(words[3]), int(words[2]), 0)
            print('ok', flush=True)
        except OSError as e:
            print('busy', e.errno, flush=True)
    elif words[0] == 'unlock':
        fcntl.lockf(f, fcntl.LOCK_UN, int(words[2]), int(words[1]), 0)
        print('ok', flush=True)
    else:
        print('unknown command', flush=True)
PY

SKIP: {
    my $python = in_path('python3');
    skip 'python3 not found in PATH', 1 unless $python;

    subtest 'Python fcntl.lockf, both ways' => sub {
        my $path = scratch_file();
        my $pid  = open2(my $from, my $to, $python, '-c', $PYTHON, $path);
        my $py   = LockerTest::Peer->new($from, $to, $pid);
        my $hello = $py->hear // 'end of file';
        like($hello, qr/^ready (\d+)$/, 'python helper is ready') or do { $py->wait; return };
        my ($py_pid) = $hello =~ /(\d+)/;
        is($py_pid, $pid, 'python helper reports the pid open2 started');
        my $fh = open_rw($path);

        # Python holds, ours asks.
        $py->say('lock ex 10 10');
        is($py->hear, 'ok', 'python lockf LOCK_EX on [10,20)');
        my ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, 15, 10);
        ok(!defined $g, 'python LOCK_EX held: lock_range(FH, LOCK_EX|LOCK_NB, 15, 10) is undef');
        is($errno, EWOULDBLOCK, '... with EWOULDBLOCK');
        ($g, $errno) = try_range($fh, LOCK_SH | LOCK_NB, 19, 1);
        ok(!defined $g, 'python LOCK_EX held: lock_range(FH, LOCK_SH|LOCK_NB, 19, 1) is undef');
        is($errno, EWOULDBLOCK, '... with EWOULDBLOCK');
        conflict_is(range_conflict($fh, LOCK_SH, 0, 0), { mode => LOCK_EX, offset => 10, length => 10, pid => $py_pid },
            'python LOCK_EX held, range_conflict(FH, LOCK_SH, 0, 0)');
        ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, 20, 5);
        ok(defined $g, 'python LOCK_EX held: non-overlapping [20,25) is granted') or diag("errno $errno");
        undef $g;
        $py->say('unlock 10 10');
        is($py->hear, 'ok', 'python unlocked [10,20)');
        ($g, $errno) = try_range($fh, LOCK_EX | LOCK_NB, 15, 10);
        ok(defined $g, 'then lock_range(FH, LOCK_EX|LOCK_NB, 15, 10) is granted') or diag("errno $errno");
        undef $g;

        # Ours holds, Python asks.
        for my $held (LOCK_EX, LOCK_SH) {
            my $g = lock_range($fh, $held, 10, 10);
            ok($g, "lock_range(FH, $NAME{$held}, 10, 10) held") or next;
            $py->say('lock ex 15 10');
            like($py->hear, qr/^busy (\d+)$/, "ours $NAME{$held}: python lockf LOCK_EX|LOCK_NB on [15,25) raises OSError");
            $py->say('lock sh 0 11');
            if ($held == LOCK_EX) {
                my $answer = $py->hear // '';
                like($answer, qr/^busy (\d+)$/, "ours LOCK_EX: python lockf LOCK_SH|LOCK_NB on [0,11) raises OSError");
                my ($e) = $answer =~ /(\d+)/;
                ok(defined $e && ($e == EAGAIN || $e == EACCES), '... with EAGAIN or EACCES') or diag("got '$answer'");
            }
            else {
                is($py->hear, 'ok', 'ours LOCK_SH: python lockf LOCK_SH|LOCK_NB on [0,11) is granted');
                $py->say('unlock 0 11');
                is($py->hear, 'ok', 'python unlocked [0,11)');
            }
            $py->say('lock ex 20 10');
            is($py->hear, 'ok', "ours $NAME{$held}: python lockf LOCK_EX on non-overlapping [20,30) is granted");
            $py->say('unlock 20 10');
            is($py->hear, 'ok', 'python unlocked [20,30)');
            ok($g->release, "ours $NAME{$held} released");
            $py->say('lock ex 15 10');
            is($py->hear, 'ok', 'then python lockf LOCK_EX|LOCK_NB on [15,25) is granted');
            $py->say('unlock 15 10');
            is($py->hear, 'ok', 'python unlocked [15,25)');
        }
        is($py->wait, 0, 'python helper exited 0');
        close $fh;
    };
}

done_testing;
