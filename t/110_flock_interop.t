#!perl
# File::Locker::flock uses flock(2): it must exclude, and be excluded by,
# every other flock(2) user -- CORE::flock, util-linux flock(1) and Python's
# fcntl.flock -- in both directions.

use strict;
use warnings;

use Test::More;
use POSIX qw(EWOULDBLOCK);
use File::Spec;
use IPC::Open2 qw(open2);
use File::Locker qw(:flock flock);
use lib 't/lib';
use LockerTest qw(scratch_file spawn probe holder our_holder try_flock conflicts in_path open_lock);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

my %NAME = (LOCK_SH() => 'LOCK_SH', LOCK_EX() => 'LOCK_EX');
my @MODES = (LOCK_SH, LOCK_EX);

# Checks what File::Locker::flock(WANTED|LOCK_NB) on a fresh handle of PATH
# gets while something else holds HELD, and releases what it got.
sub our_request_ok {
    my ($path, $held, $wanted, $what) = @_;
    my $fh = open_lock($path);
    my ($got, $errno) = try_flock($fh, $wanted | LOCK_NB);
    if (conflicts($held, $wanted)) {
        ok(defined $got && $got eq '0', "$what: refused with 0") or diag('got ' . ($got // 'undef'));
        is($errno, EWOULDBLOCK, "$what: \$! is EWOULDBLOCK");
    }
    else {
        is($got, 1, "$what: granted") or diag("errno $errno");
        is(flock($fh, LOCK_UN), 1, "$what: unlocked");
    }
    close $fh;
}

# Checks that File::Locker::flock(WANTED|LOCK_NB) is granted on PATH now.
sub our_grant_ok {
    my ($path, $wanted, $what) = @_;
    my $fh = open_lock($path);
    my ($got, $errno) = try_flock($fh, $wanted | LOCK_NB);
    is($got, 1, $what) or diag("errno $errno");
    flock($fh, LOCK_UN);
    close $fh;
}

# Runs COMMAND with its output discarded; returns its exit code (-1 if it
# could not be run or died from a signal).
sub exit_code {
    my @command = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', File::Spec->devnull or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(126);
        exec { $command[0] } @command or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return $? & 127 ? -1 : $? >> 8;
}

# Starts COMMAND with its stdin and stdout connected to us; returns a
# LockerTest::Peer for it (lines in both directions, wait() reaps it).
sub start_program {
    my @command = @_;
    my $pid = open2(my $from, my $to, @command);
    return LockerTest::Peer->new($from, $to, $pid);
}

subtest 'CORE::flock holds, File::Locker::flock asks' => sub {
    for my $held (@MODES) {
        my $path   = scratch_file();
        my $holder = holder($path, $held);    # returns once CORE::flock holds
        for my $wanted (@MODES) {
            our_request_ok($path, $held, $wanted,
                "CORE::flock $NAME{$held} in another process, ours $NAME{$wanted}|LOCK_NB");
        }
        $holder->say('release');
        is($holder->hear, 'released', "CORE::flock $NAME{$held} holder released");
        is($holder->wait, 0, 'holder exited cleanly');
        our_grant_ok($path, LOCK_EX, "after CORE::flock $NAME{$held} released, ours LOCK_EX|LOCK_NB is granted");
    }
};

subtest 'File::Locker::flock holds, CORE::flock asks' => sub {
    for my $held (@MODES) {
        my $path = scratch_file();
        my ($holder, $word) = our_holder($path, $held);
        is($word, 'locked', "ours $NAME{$held} taken in another process");
        for my $wanted (@MODES) {
            is(probe($path, $wanted), conflicts($held, $wanted) ? 0 : 1,
                "ours $NAME{$held} held, CORE::flock $NAME{$wanted}|LOCK_NB in another process "
                  . (conflicts($held, $wanted) ? 'refused (EWOULDBLOCK)' : 'granted'));
        }
        $holder->say('release');
        is($holder->hear, 'released', "ours $NAME{$held} released with LOCK_UN");
        is(probe($path, LOCK_EX), 1, 'then CORE::flock LOCK_EX|LOCK_NB is granted');
        is($holder->wait, 0, 'holder exited cleanly');
    }
};

subtest 'one process, two handles: ours against CORE::flock' => sub {
    my $path = scratch_file();
    my $ours = open_lock($path);
    my $core = open_lock($path);

    is(flock($ours, LOCK_EX), 1, 'ours LOCK_EX on one handle');
    local $! = 0;
    my $got = CORE::flock($core, LOCK_SH | LOCK_NB);
    my $errno = $! + 0;
    ok(!$got, 'CORE::flock LOCK_SH|LOCK_NB on another handle is refused');
    is($errno, EWOULDBLOCK, '... with EWOULDBLOCK');
    is(flock($ours, LOCK_UN), 1, 'ours unlocked');

    ok(CORE::flock($core, LOCK_EX | LOCK_NB), 'CORE::flock LOCK_EX on the other handle');
    our_request_ok($path, LOCK_EX, LOCK_SH, 'CORE::flock LOCK_EX on another handle, ours LOCK_SH|LOCK_NB');
    ok(CORE::flock($core, LOCK_UN), 'CORE::flock unlocked');
    our_grant_ok($path, LOCK_EX, 'then ours LOCK_EX|LOCK_NB is granted');
    close $ours;
    close $core;
};

SKIP: {
    skip 'util-linux flock(1) not found in PATH', 2 unless in_path('flock');

    subtest 'flock(1) holds, File::Locker::flock asks' => sub {
        for my $held (@MODES) {
            my $path    = scratch_file();
            my $option  = $held == LOCK_EX ? '-x' : '-s';
            my $program = start_program('flock', $option, $path,
                'sh', '-c', 'echo locked; read line; echo done');
            is($program->hear, 'locked', "flock $option holds the lock and runs its command");
            for my $wanted (@MODES) {
                our_request_ok($path, $held, $wanted, "flock $option holding, ours $NAME{$wanted}|LOCK_NB");
            }
            $program->say('release');
            is($program->hear, 'done', "flock $option: its command finished");
            is($program->wait, 0, "flock $option exited 0 (and so released the lock)");
            our_grant_ok($path, LOCK_EX, "after flock $option exited, ours LOCK_EX|LOCK_NB is granted");
        }
    };

    subtest 'File::Locker::flock holds, flock(1) asks' => sub {
        my $path = scratch_file();
        for my $held (@MODES) {
            my $fh = open_lock($path);
            is(flock($fh, $held), 1, "ours $NAME{$held} held");
            for my $wanted (@MODES) {
                my $option = $wanted == LOCK_EX ? '-x' : '-s';
                is(exit_code('flock', '-n', $option, $path, 'true'), conflicts($held, $wanted) ? 1 : 0,
                    "ours $NAME{$held} held: flock -n $option "
                      . (conflicts($held, $wanted) ? 'exits 1 (conflict)' : 'exits 0 (granted)'));
            }
            is(flock($fh, LOCK_UN), 1, "ours $NAME{$held} released");
            is(exit_code('flock', '-n', '-x', $path, 'true'), 0, 'then flock -n -x exits 0');
            close $fh;
        }
    };
}

my $PY_HOLDER = <<'PY';
import fcntl, sys
f = open(sys.argv[1])
fcntl.flock(f, {'SH': fcntl.LOCK_SH, 'EX': fcntl.LOCK_EX}[sys.argv[2]])
print('locked', flush=True)
if sys.stdin.readline().strip() == 'release':
    fcntl.flock(f, fcntl.LOCK_UN)
    print('released', flush=True)
sys.stdin.readline()
PY

my $PY_PROBE = <<'PY';
import errno, fcntl, sys
f = open(sys.argv[1])
try:
    fcntl.flock(f, {'SH': fcntl.LOCK_SH, 'EX': fcntl.LOCK_EX}[sys.argv[2]] | fcntl.LOCK_NB)
except OSError as e:
    print('busy', 'EWOULDBLOCK' if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else e.errno, flush=True)
else:
    print('granted', flush=True)
PY

# Asks a Python process whether fcntl.flock(MODE|LOCK_NB) would be granted.
sub python_probe {
    my ($path, $mode) = @_;
    my $program = start_program('python3', '-c', $PY_PROBE, $path, $mode == LOCK_EX ? 'EX' : 'SH');
    my $answer = $program->hear // 'end of file';
    my $status = $program->wait;
    return $status == 0 ? $answer : "$answer (exit status $status)";
}

SKIP: {
    skip 'python3 with fcntl not available', 2
      unless in_path('python3') && exit_code('python3', '-c', 'import fcntl') == 0;

    subtest 'Python fcntl.flock holds, File::Locker::flock asks' => sub {
        for my $held (@MODES) {
            my $path    = scratch_file();
            my $program = start_program('python3', '-c', $PY_HOLDER, $path, $held == LOCK_EX ? 'EX' : 'SH');
            is($program->hear, 'locked', "Python holds $NAME{$held}");
            for my $wanted (@MODES) {
                our_request_ok($path, $held, $wanted, "Python $NAME{$held} holding, ours $NAME{$wanted}|LOCK_NB");
            }
            $program->say('release');
            is($program->hear, 'released', 'Python released with LOCK_UN');
            our_grant_ok($path, LOCK_EX, "after Python's LOCK_UN, ours LOCK_EX|LOCK_NB is granted");
            is($program->wait, 0, 'Python exited 0');
        }
    };

    subtest 'File::Locker::flock holds, Python fcntl.flock asks' => sub {
        for my $held (@MODES) {
            my $path = scratch_file();
            my ($holder, $word) = our_holder($path, $held);
            is($word, 'locked', "ours $NAME{$held} taken in another process");
            for my $wanted (@MODES) {
                my $expect = conflicts($held, $wanted) ? 'busy EWOULDBLOCK' : 'granted';
                is(python_probe($path, $wanted), $expect,
                    "ours $NAME{$held} held, Python $NAME{$wanted}|LOCK_NB: $expect");
            }
            $holder->say('release');
            is($holder->hear, 'released', "ours $NAME{$held} released with LOCK_UN");
            is(python_probe($path, LOCK_EX), 'granted', 'then Python LOCK_EX|LOCK_NB is granted');
            is($holder->wait, 0, 'holder exited cleanly');
        }
    };
}

done_testing;
