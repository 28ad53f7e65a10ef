#!perl
# locker --fcntl, --start, --length (util-linux flock(1)'s spelling of an
# open-file-description lock) and --range, their short form, checked
# against Python's fcntl.lockf in other processes; -u --range in the FD
# form; and the messages for bad byte-range input.

use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use IO::Handle;
use POSIX ();
use File::Temp ();
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir read_line slurp in_path lockf_probe);

plan skip_all => 'python3 is not installed' unless in_path('python3');
require File::Locker;
plan skip_all => 'no open-file-description locks here' unless File::Locker::_using_ofd_locks();

$SIG{PIPE} = 'IGNORE';
my @LOCKER = ($^X, '-Mblib', 'bin/locker');

# A Python process holding fcntl.lockf LOCK_EX on LENGTH bytes at START of
# PATH until its stdin ends; returns its pid and the pipe to its stdin.
sub py_holder {
    my ($path, $start, $length) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    pipe(my $said_r, my $said_w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<&', $r or POSIX::_exit(120);
        open STDOUT, '>&', $said_w or POSIX::_exit(121);
        close $_ for $w, $said_r;
        { no warnings 'exec'; exec 'python3', '-c', '
import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX, int(sys.argv[3]), int(sys.argv[2]))
print("locked", flush=True)
sys.stdin.read()
', $path, $start, $length }
        POSIX::_exit(122);
    }
    close $_ for $r, $said_w;
    my $word = read_line($said_r);
    die "python holder said '" . ($word // 'nothing') . "'\n" unless ($word // '') eq 'locked';
    return { pid => $pid, in => $w };
}

sub py_release { my ($h) = @_; close $h->{in}; waitpid $h->{pid}, 0; return $? }

# Runs locker ARGS with COMMAND  sh -c 'echo running; read x'  and calls
# CHECK while COMMAND runs; returns locker's exit code.
sub while_locked {
    my ($check, @args) = @_;
    pipe(my $in_r, my $in_w) or die "pipe: $!";
    pipe(my $out_r, my $out_w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<&', $in_r or POSIX::_exit(120);
        open STDOUT, '>&', $out_w or POSIX::_exit(121);
        close $_ for $in_w, $out_r;
        { no warnings 'exec'; exec @LOCKER, @args, 'sh', '-c', 'echo running; read x' }
        POSIX::_exit(122);
    }
    close $_ for $in_r, $out_w;
    is(read_line($out_r), 'running', "@args: COMMAND is running") and $check->();
    print {$in_w} "\n";
    close $in_w;
    waitpid $pid, 0;
    return $? >> 8;
}

sub data_file {
    my $path = scratch_file();
    open my $fh, '>', $path or die "open: $!";
    print {$fh} 'x' x 4096;
    close $fh;
    return $path;
}

subtest '--fcntl: the whole file, and beyond its end' => sub {
    my $path = data_file();
    my $code = while_locked(sub {
        is(lockf_probe($path, LOCK_SH, 0, 1), 'busy', 'byte 0 is locked');
        is(lockf_probe($path, LOCK_SH, 1 << 30, 1), 'busy', 'a byte far beyond the end is locked');
    }, '--fcntl', $path);
    is($code, 0, 'locker exits 0');
    is(lockf_probe($path, LOCK_EX, 0, 0), 'free', 'released afterwards');

    $code = while_locked(sub {
        is(lockf_probe($path, LOCK_SH, 0, 1), 'free', '-s: another shared lock is granted');
        is(lockf_probe($path, LOCK_EX, 0, 1), 'busy', '-s: an exclusive one is not');
    }, '--fcntl', '-s', $path);
    is($code, 0, 'locker -s exits 0');
};

subtest '--start and --length select the bytes' => sub {
    my $path = data_file();
    my @cases = (
        [['--start', 10, '--length', 5], [9, 'free'], [10, 'busy'], [14, 'busy'], [15, 'free']],
        [['--range', '10:5'],            [9, 'free'], [10, 'busy'], [14, 'busy'], [15, 'free']],
        [['--start', 10],                [9, 'free'], [10, 'busy'], [1 << 30, 'busy']],
        [['--length', 5],                [0, 'busy'], [4, 'busy'], [5, 'free']],
        [['--range', '0:100', '--length', 10], [9, 'busy'], [10, 'free']],
        [['--start', '1K', '--length', '1KiB'], [1023, 'free'], [1024, 'busy'], [2047, 'busy'], [2048, 'free']],
        [['--start', '1KB', '--length', '1'], [999, 'free'], [1000, 'busy'], [1001, 'free']],
    );
    for my $case (@cases) {
        my ($args, @bytes) = @$case;
        my $code = while_locked(sub {
            is(lockf_probe($path, LOCK_EX, $_->[0], 1), $_->[1], "@$args: byte $_->[0] is $_->[1]") for @bytes;
        }, @$args, $path);
        is($code, 0, "@$args: exits 0");
    }
};

subtest 'against a Python lockf holder of byte 12' => sub {
    my $path   = data_file();
    my $holder = py_holder($path, 12, 1);
    my $marker = scratch_dir() . '/ran';
    my $run = sub { system(@LOCKER, '-n', @_, $path, 'sh', '-c', ': > "$0"', $marker) >> 8 };
    is($run->('--start', 10, '--length', 5), 1, 'bytes 10-14: busy');
    is($run->('--range', '12:1'), 1, '--range 12:1: busy');
    is($run->('--fcntl'), 1, '--fcntl (whole file): busy');
    is($run->('-s', '--start', 12), 1, '-s from byte 12: busy');
    ok(!-e $marker, 'COMMAND did not run');
    is($run->('--range', '0:12'), 0, 'bytes 0-11: free');
    is($run->('--start', 13), 0, 'from byte 13: free');
    ok(-e $marker, 'COMMAND ran');
    is(system(@LOCKER, '-w', '0.2', '--range', '12:1', $path, 'true') >> 8, 1, '-w 0.2: times out');
    is(py_release($holder), 0, 'the Python holder exited cleanly');
    is($run->('--fcntl'), 0, 'free once the holder is gone');
};

# Runs SCRIPT in sh with descriptor 9 opened on PATH as REDIRECT says
# (e.g. '9<>'); $L in the script runs locker. Returns sh's exit code.
sub in_shell {
    my ($path, $redirect, $script) = @_;
    my $locker = join ' ', map { "'$_'" } @LOCKER;
    return system('sh', '-c', "L() { $locker \"\$@\"; }; ( $script ) $redirect\"\$0\"", $path) >> 8;
}

subtest '-u --range unlocks the bytes of the FD' => sub {
    my $path = data_file();
    my $report = scratch_dir() . '/report';
    # Each step appends what Python sees to a report, so the shell holds
    # descriptor 9 throughout.
    my $see = sub {
        my ($start, $length) = @_;
        qq{python3 -c 'import fcntl,sys
f=open(sys.argv[1],"r+")
try:
    fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB, $length, $start); print("free")
except OSError: print("busy")' "\$0" >> '$report'};
    };
    unlink $report;
    is(in_shell($path, '9<>', 'L --range 0:10 9 || exit 5; ' . $see->(5, 1) . '; L -u --range 0:10 9 || exit 6; '
                . $see->(5, 1)), 0, 'the shell locked and unlocked bytes 0-9 of descriptor 9');
    is(slurp($report), "busy\nfree\n", 'Python saw byte 5 locked, then free');

    unlink $report;
    is(in_shell($path, '9>>', 'L --fcntl 9 || exit 5; L -u --start 0 --length 40 9 || exit 6; '
                . $see->(30, 1) . '; ' . $see->(50, 1)), 0, 'the same through a write-only descriptor');
    is(slurp($report), "free\nbusy\n", 'bytes 0-39 unlocked, the rest still locked');

    # Bytes another process holds are not ours: the bytes around them are
    # unlocked and the other process keeps its lock. The shell takes 0-4,
    # waits on a FIFO until Python holds byte 7, then unlocks 0-9.
    unlink $report;
    my $fifo = scratch_dir() . '/go';
    POSIX::mkfifo($fifo, 0600) or die "mkfifo: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::_exit(in_shell($path, '9<>', "L --range 0:5 9 || exit 5; read x < '$fifo'; "
                              . 'L -u --range 0:10 9 || exit 6; ' . $see->(0, 5) . '; ' . $see->(7, 1)));
    }
    my $holder = py_holder($path, 7, 1);
    {
        open my $go, '>', $fifo or die "open $fifo: $!";
        print {$go} "go\n";
    }
    waitpid $pid, 0;
    is($? >> 8, 0, 'the shell unlocked 0-9 while Python held byte 7');
    is(slurp($report), "free\nbusy\n", 'its bytes 0-4 are free; Python still holds byte 7');
    is(py_release($holder), 0, 'the Python holder exited cleanly');
};

subtest 'bad byte-range input' => sub {
    my $path = data_file();
    my $run = sub {
        my $err = scratch_dir() . '/err';
        my $code = system("@LOCKER @_ 2>'$err'") >> 8;
        return ($code, slurp($err));
    };
    my ($code, $err) = $run->("--start 9223372036854775807 --length 1 '$path' true");
    is($code, 64, 'a range beyond the largest offset: usage error');
    like($err, qr/^locker: invalid range: it ends beyond the largest file offset$/m, '... says so');
    ($code, $err) = $run->("--range 0:99999999999999999999 '$path' true");
    is($code, 64, 'an oversized length: usage error');
    like($err, qr/^locker: invalid range: '0:99999999999999999999'/m, '... says so');
    ($code, $err) = $run->("--start x '$path' true");
    is($code, 64, '--start x: usage error');
    is($err, "locker: invalid start offset: 'x'\n", '... says so');
    ($code, $err) = $run->("--length -1 '$path' true");
    is($code, 64, '--length -1: usage error');
    ($code, $err) = $run->("--range 5 '$path' true");
    is($code, 64, '--range 5: usage error');
    like($err, qr/expected OFFSET:LENGTH/, '... says what is expected');

    SKIP: {
        skip 'needs root to act as another user', 2 unless $> == 0;
        # Root may write anything: ask as nobody, for a file nobody can read
        # but not write, in a directory nobody can enter.
        my $open_dir = File::Temp::tempdir('locker-ro-XXXXXX', TMPDIR => 1, CLEANUP => 1);
        chmod 0755, $open_dir or die "chmod: $!";
        my $ro = "$open_dir/read-only";
        open my $fh, '>', $ro or die "create $ro: $!";
        close $fh;
        chmod 0644, $ro or die "chmod: $!";
        my $err = scratch_dir() . '/ro-err';
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open STDERR, '>', $err or POSIX::_exit(101);
            POSIX::setgid(65534); POSIX::setuid(65534);
            POSIX::_exit(100) if $> == 0;
            # A build in a directory nobody may enter (root's home, as cpanm
            # builds there) cannot be run as nobody: say so.
            # (Absolute paths: make test hands perl an absolute @INC.)
            require Cwd;
            POSIX::_exit(103)
              unless -r Cwd::getcwd() . '/blib/lib/File/Locker.pm' && -r Cwd::getcwd() . '/bin/locker';
            { no warnings 'exec'; exec @LOCKER, '--range', '0:10', $ro, 'true' }
            POSIX::_exit(102);
        }
        waitpid $pid, 0;
        skip 'the build directory is closed to other users', 2 if $? >> 8 == 103;
        is($? >> 8, 66, 'an exclusive range on a read-only file: cannot open it for writing (66)');
        like(slurp($err), qr/^locker: cannot open lock file .* for writing/m,
             '... and says so, not "Bad file descriptor"');
    }
};

subtest 'a symbolic link at LOCKFILE: says how to follow it' => sub {
    my $target = scratch_file();
    my $link   = scratch_dir() . '/a-link';
    symlink $target, $link or die "symlink: $!";
    my $err = scratch_dir() . '/link-err';
    my $code = system("@LOCKER '$link' true 2>'$err'") >> 8;
    is($code, 66, 'refused with 66');
    like(slurp($err), qr/^locker: cannot open lock file \Q$link\E: it is a symbolic link; use --follow-symlinks/m,
         'names the link and the option');
};

done_testing;
