#!perl
# locker as a drop-in for util-linux flock(1): one table of invocations,
# each run with /usr/bin/flock and with locker on fresh lock files in fresh
# directories (relative names, so messages can be compared), with the same
# holder in the way where the row asks for one. Compared: exit code,
# whether COMMAND ran, whether the lock was held while it ran (a separate
# process tries LOCK_EX|LOCK_NB on its own descriptor), stdout and stderr
# with the program name and the -v timing normalised.
#
# Two things are not compared, and why:
# - the order of stdout lines: flock(1) writes its --verbose lines through
#   a stdio buffer that it flushes at exit, so in a file they follow
#   COMMAND's output; locker flushes before COMMAND starts, as a terminal
#   shows both;
# - locker's "waiting for ..." lines on stderr under --verbose: its
#   documented addition (who holds the lock while it waits).
# The few deliberate differences are asserted on their own at the end.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use Fcntl qw(:flock);
use File::Temp ();
use POSIX ();
use lib 't/lib';
use LockerTest qw(holder slurp release_holder);

my $FLOCK = '/usr/bin/flock';
plan skip_all => 'util-linux flock(1) is not installed' unless -x $FLOCK;
my $version = `$FLOCK --version 2>&1` // '';
my $HAVE_FCNTL = `$FLOCK --help 2>&1` =~ /--fcntl/;

my $root = abs_path('.');
my $top  = File::Temp::tempdir('locker-vs-flock-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# A locker command named "locker", so both programs are one path to exec.
my $LOCKER = "$top/locker";
{
    open my $fh, '>', $LOCKER or die "create $LOCKER: $!";
    print {$fh} "#!/bin/sh\nexec '$^X' -I'$root/blib/lib' -I'$root/blib/arch' '$root/bin/locker' \"\$@\"\n";
    close $fh or die "write $LOCKER: $!";
    chmod 0755, $LOCKER or die "chmod: $!";
}

# COMMAND: records that it ran and whether another open of "lock" could
# take LOCK_EX|LOCK_NB while it ran (an outside look through the kernel).
my $PROBE = qq{'$^X' -e 'open F, "<", "lock" or exit 3; exit(flock(F, 6) ? 0 : 1)'};
my $CHECK = ": > ran; if $PROBE; then echo free; else echo held; fi > state";
my @CMD   = ('sh', '-c', $CHECK);

# Rows: [name, holder (undef, 'ex', 'sh'), args with 'CMD' standing for
# @CMD]; FD-form rows run as  sh -c 'PROG ARGS; probe' 9<>lock.
my @rows = (
    # Free lock: every spelling of every option.
    ['plain',                undef, 'lock', 'CMD'],
    ['-s',                   undef, '-s', 'lock', 'CMD'],
    ['--shared',             undef, '--shared', 'lock', 'CMD'],
    ['-x',                   undef, '-x', 'lock', 'CMD'],
    ['-e',                   undef, '-e', 'lock', 'CMD'],
    ['--exclusive',          undef, '--exclusive', 'lock', 'CMD'],
    ['--excl (abbreviated)', undef, '--excl', 'lock', 'CMD'],
    ['-n',                   undef, '-n', 'lock', 'CMD'],
    ['--nb',                 undef, '--nb', 'lock', 'CMD'],
    ['--nonblock',           undef, '--nonblock', 'lock', 'CMD'],
    ['--nonblocking',        undef, '--nonblocking', 'lock', 'CMD'],
    ['-w 1',                 undef, '-w', '1', 'lock', 'CMD'],
    ['-w1',                  undef, '-w1', 'lock', 'CMD'],
    ['-w 1e-1',              undef, '-w', '1e-1', 'lock', 'CMD'],
    ['-w " 2"',              undef, '-w', ' 2', 'lock', 'CMD'],
    ['--wait 1',             undef, '--wait', '1', 'lock', 'CMD'],
    ['--timeout=1',          undef, '--timeout=1', 'lock', 'CMD'],
    ['-w 0',                 undef, '-w', '0', 'lock', 'CMD'],
    ['-o',                   undef, '-o', 'lock', 'CMD'],
    ['--close',              undef, '--close', 'lock', 'CMD'],
    ['-F',                   undef, '-F', 'lock', 'CMD'],
    ['--no-fork',            undef, '--no-fork', 'lock', 'CMD'],
    ['-u with COMMAND',      undef, '-u', 'lock', 'CMD'],
    ['--unlock with COMMAND', undef, '--unlock', 'lock', 'CMD'],
    ['-E 3 on a free lock',  undef, '-E', '3', '-n', 'lock', 'CMD'],
    ['-sn (bundled)',        undef, '-sn', 'lock', 'CMD'],
    ['-nE7 (bundled)',       undef, '-nE7', 'lock', 'CMD'],
    ['--',                   undef, '--', 'lock', 'CMD'],
    ['-c',                   undef, 'lock', '-c', $CHECK],
    ['--command',            undef, 'lock', '--command', $CHECK],
    ['--verbose',            undef, '--verbose', 'lock', 'CMD'],
    ['--verbose -c',         undef, '--verbose', 'lock', '-c', "$CHECK; echo out"],
    ['--verb (abbreviated)', undef, '--verb', '-s', 'lock', 'CMD'],
    ['--verbose -u',         undef, '--verbose', '-u', 'lock', 'CMD'],
    ['a new lock file',      undef, 'new-lock', 'CMD'],
    ['a directory',          undef, '.', 'CMD'],
    ['COMMAND exits 7',      undef, 'lock', 'sh', '-c', "$CHECK; exit 7"],
    ['COMMAND killed by TERM', undef, 'lock', 'sh', '-c', "$CHECK; kill -TERM \$\$"],
    ['COMMAND with arguments', undef, 'lock', 'sh', '-c', 'printf "[%s]" "$@"; : > ran', 'sh', 'a b', '', '-n'],
    ['COMMAND found in PATH', undef, 'lock', 'true'],
    ['COMMAND missing',      undef, 'lock', './no-such-command'],
    ['COMMAND not executable', undef, 'lock', '/etc'],

    # Busy: an exclusive holder.
    ['-n, busy',             'ex', '-n', 'lock', 'CMD'],
    ['-s -n, busy',          'ex', '-s', '-n', 'lock', 'CMD'],
    ['-n -E 42, busy',       'ex', '-n', '-E', '42', 'lock', 'CMD'],
    ['--conflict-exit-code 42', 'ex', '-n', '--conflict-exit-code', '42', 'lock', 'CMD'],
    ['--conflict-exit-code=9', 'ex', '--nb', '--conflict-exit-code=9', 'lock', 'CMD'],
    ['-E 0, busy',           'ex', '-n', '-E', '0', 'lock', 'CMD'],
    ['-E 255, busy',         'ex', '-n', '-E', '255', 'lock', 'CMD'],
    ['-E +5, busy',          'ex', '-n', '-E', '+5', 'lock', 'CMD'],
    ['-w 0, busy',           'ex', '-w', '0', 'lock', 'CMD'],
    ['-w 0.2, busy',         'ex', '-w', '0.2', 'lock', 'CMD'],
    ['-w 0.2 -E 3, busy',    'ex', '-w', '0.2', '-E', '3', 'lock', 'CMD'],
    ['--verbose -n, busy',   'ex', '--verbose', '-n', 'lock', 'CMD'],
    ['--verbose -w 0.2, busy', 'ex', '--verbose', '-w', '0.2', 'lock', 'CMD'],
    ['-u beside a holder',   'ex', '-u', 'lock', 'CMD'],
    # Busy: a shared holder.
    ['-s -n beside shared',  'sh', '-s', '-n', 'lock', 'CMD'],
    ['-n against shared',    'sh', '-n', 'lock', 'CMD'],

    # Usage errors and other failures.
    ['no arguments',         undef],
    ['LOCKFILE alone',       undef, 'lock'],
    ['options alone',        undef, '-s'],
    ['-w abc',               undef, '-w', 'abc', 'lock', 'CMD'],
    ['-w 1x',                undef, '-w', '1x', 'lock', 'CMD'],
    ['-w ""',                undef, '-w', '', 'lock', 'CMD'],
    ['-w "1 "',              undef, '-w', '1 ', 'lock', 'CMD'],
    ['-w without a value',   undef, '-w'],
    ['--timeout without a value', undef, 'lock', '--timeout'],
    ['--time (abbreviated) takes LOCKFILE as its value', undef, '--time', 'lock', 'CMD'],
    ['-E x',                 undef, '-E', 'x', 'lock', 'CMD'],
    ['-E 1x',                undef, '-E', '1x', 'lock', 'CMD'],
    ['-E 256',               undef, '-E', '256', '-n', 'lock', 'CMD'],
    ['-E -1',                undef, '-E', '-1', '-n', 'lock', 'CMD'],
    ['-E 99999999999',       undef, '-E', '99999999999', 'lock', 'CMD'],
    ['unknown long option',  undef, '--no-such-option', 'lock', 'CMD'],
    ['unknown short option', undef, '-z', 'lock', 'CMD'],
    ['-?',                   undef, '-?', 'lock', 'CMD'],
    ['--no (ambiguous)',     undef, '--no', 'lock', 'CMD'],
    ['--n (ambiguous)',      undef, '--n', 'lock', 'CMD'],
    ['--shared=1',           undef, '--shared=1', 'lock', 'CMD'],
    ['-c without a command', undef, 'lock', '-c'],
    ['-c with two arguments', undef, 'lock', '-c', $CHECK, 'extra'],
    ['-o with -F',           undef, '-o', '-F', 'lock', 'CMD'],
    ['missing directory',    undef, 'no-such-dir/lock', 'CMD'],
    ['a file as a directory', undef, 'lock/lock', 'CMD'],
    ['FD 99, closed',        undef, '99'],
    ['FD 99x',               undef, '99x'],
    ['FD " 99"',             undef, ' 99'],

    # The FD form, inside  sh -c '...' 9<>lock.
    ['FD: -n 9',             [undef], '-n', '9'],
    ['FD: -s 9',             [undef], '-s', '9'],
    ['FD: -u 9',             [undef], '-u', '9'],
    ['FD: -w 1 9',           [undef], '-w', '1', '9'],
    ['FD: --verbose 9',      [undef], '--verbose', '9'],
    ['FD: -n 9, busy',       ['ex'], '-n', '9'],
    ['FD: -n -E 5 9, busy',  ['ex'], '-n', '-E', '5', '9'],
    ['FD: --verbose -n 9, busy', ['ex'], '--verbose', '-n', '9'],
    ['FD: -s -n 9 beside shared', ['sh'], '-s', '-n', '9'],
);
# util-linux 2.39 and later: open-file-description locks.
push @rows, (
    ['--fcntl',              undef, '--fcntl', 'lock', 'CMD'],
    ['--fcntl -s',           undef, '--fcntl', '-s', 'lock', 'CMD'],
    ['--start 10',           undef, '--start', '10', 'lock', 'CMD'],
    ['--length 5',           undef, '--length', '5', 'lock', 'CMD'],
    ['--start 1K --length 1K', undef, '--start', '1K', '--length', '1K', 'lock', 'CMD'],
) if $HAVE_FCNTL;

my $serial = 0;

# Runs PROGRAM with ARGS in a fresh directory holding an empty "lock" (and
# the holder HOLDER in the way); returns what the table compares.
sub run_row {
    my ($program, $holder, @args) = @_;
    my $fd_form = ref $holder;
    $holder = $holder->[0] if $fd_form;
    my $dir = "$top/run" . ++$serial;
    mkdir $dir or die "mkdir $dir: $!";
    open my $fh, '>', "$dir/lock" or die "create $dir/lock: $!";
    close $fh;
    my $peer = $holder ? holder("$dir/lock", $holder eq 'ex' ? LOCK_EX : LOCK_SH) : undef;

    my @argv = map { $_ eq 'CMD' ? @CMD : $_ } @args;
    @argv = ('sh', '-c', "\"\$@\"; s=\$?; if $PROBE; then echo free; else echo held; fi > after; exit \$s",
             'sh', $program, @argv) if $fd_form;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        chdir $dir or POSIX::_exit(120);
        open STDIN,  '<', '/dev/null' or POSIX::_exit(121);
        open STDOUT, '>', 'stdout'    or POSIX::_exit(122);
        open STDERR, '>', 'stderr'    or POSIX::_exit(123);
        if ($fd_form) {
            open my $lock, '+<', 'lock' or POSIX::_exit(124);
            POSIX::dup2(fileno $lock, 9) // POSIX::_exit(125);
        }
        { no warnings 'exec'; exec { $fd_form ? 'sh' : $program } $fd_form ? @argv : ($program, @argv) }
        POSIX::_exit(126);
    }
    waitpid $pid, 0;
    my $status = $?;
    release_holder($peer) if $peer;
    my %got = (
        status => $status & 127 ? 'signal ' . ($status & 127) : 'exit ' . ($status >> 8),
        ran    => -e "$dir/ran" ? 'ran' : 'did not run',
        state  => -e "$dir/state" ? slurp("$dir/state") : '-',
        after  => -e "$dir/after" ? slurp("$dir/after") : '-',
        stdout => join('', sort map { normalise($_) } split /^/m, slurp("$dir/stdout")),
        stderr => join('', map { normalise($_) } split /^/m, slurp("$dir/stderr")),
    );
    $got{stderr} =~ s/^PROG: waiting for .*\n//mg if $program eq $LOCKER;
    return \%got;
}

sub normalise {
    my ($line) = @_;
    $line =~ s{^(?:\S*/)?(?:flock|locker): }{PROG: };    # getopt's messages use argv[0]
    $line =~ s/^Try '(?:flock|locker) --help'/Try 'PROG --help'/;
    $line =~ s/getting lock took \d+\.\d{6} seconds/getting lock took N seconds/;
    return $line;
}

note "comparing with $version";
for my $row (@rows) {
    my ($name, $holder, @args) = @$row;
    my $flock  = run_row($FLOCK, $holder, @args);
    my $locker = run_row($LOCKER, $holder, @args);
    is_deeply($locker, $flock, "$name: as flock(1)")
      or diag(explain({ 'flock(1)' => $flock, locker => $locker }));
}

# The lock really is held by COMMAND in the rows above that say so: at
# least one row must have seen "held" and one "free", or the probe is broken.
{
    my $held = run_row($LOCKER, undef, 'lock', 'CMD');
    my $free = run_row($LOCKER, undef, '-u', 'lock', 'CMD');
    is($held->{state}, "held\n", 'the probe sees the lock while COMMAND runs');
    is($free->{state}, "free\n", 'the probe sees no lock under -u');
}

# --help and --version: the same exit code and streams; the text is each
# program's own.
for my $args (['-h'], ['--help'], ['-V'], ['--version']) {
    my $flock  = run_row($FLOCK, undef, @$args);
    my $locker = run_row($LOCKER, undef, @$args);
    is($locker->{status}, $flock->{status}, "@$args: the same exit status ($flock->{status})");
    ok(length $locker->{stdout} && length $flock->{stdout}, "@$args: both print on stdout");
    is($locker->{stderr}, $flock->{stderr}, "@$args: the same (empty) stderr");
}

# Deliberate differences.
{
    my $flock  = run_row($FLOCK, undef, '-w', '-1', 'lock', 'CMD');
    my $locker = run_row($LOCKER, undef, '-w', '-1', 'lock', 'CMD');
    is($flock->{status}, 'exit 71', 'flock(1) -w -1: 71, cannot set up its timer');
    is($locker->{status}, 'exit 64', 'locker -w -1: a usage error');
    is($locker->{stderr}, "PROG: invalid timeout value: '-1'\n", 'locker -w -1: says why');
    is($locker->{ran}, 'did not run', 'locker -w -1: COMMAND did not run');

    # flock(1)'s --verbose lines sit in its stdio buffer, which exec drops
    # when stdout is a file; locker's are written before the exec.
    $locker = run_row($LOCKER, undef, '--verbose', '-F', 'lock', 'CMD');
    is($locker->{stdout}, "PROG: executing sh\nPROG: getting lock took N seconds\n",
       'locker --verbose -F: both lines reach a file');
    is($locker->{state}, "held\n", 'locker --verbose -F: COMMAND holds the lock');
}

done_testing;
