#!perl
# How long locker's lock lasts, as with util-linux flock(1): COMMAND
# inherits the lock descriptor (unless -o), so killing locker -- even with
# SIGKILL -- never leaves COMMAND running unlocked, and a background job
# that COMMAND leaves behind keeps the lock. locker forwards TERM, INT, HUP,
# QUIT, USR1 and USR2 to COMMAND, waits for it and exits with its status.
# Every claim about the lock is checked from another process.

use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use IO::Handle;
use POSIX ();
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir probe read_line slurp);

$SIG{PIPE} = 'IGNORE';
my @LOCKER = ($^X, '-Mblib', 'bin/locker');

# Starts ARGV with stdin and stdout on pipes, stderr in a file; returns
# { pid, in, out, err }.
sub start {
    my @argv = @_;
    pipe(my $in_r, my $in_w) or die "pipe: $!";
    pipe(my $out_r, my $out_w) or die "pipe: $!";
    my $err = scratch_dir() . '/stderr' . int(rand 1e9);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<&', $in_r or POSIX::_exit(120);
        open STDOUT, '>&', $out_w or POSIX::_exit(121);
        open STDERR, '>', $err or POSIX::_exit(122);
        close $_ for $in_w, $out_r;
        { no warnings 'exec'; exec { $argv[0] } @argv }
        POSIX::_exit(123);
    }
    close $_ for $in_r, $out_w;
    $in_w->autoflush(1);
    return { pid => $pid, in => $in_w, out => $out_r, err => $err };
}

# Waits for a started process; returns its wait status.
sub reap { my ($proc) = @_; waitpid $proc->{pid}, 0; return $? }

# A perl COMMAND that says "running PID", reports each forwarded signal by
# name on stdout, and exits 42 once a line arrives on its stdin.
my $COMMAND = <<'END';
$| = 1;
$SIG{$_} = do { my $name = $_; sub { print "got $name\n" } } for qw(TERM INT HUP QUIT USR1 USR2);
print "running $$\n";
my $line = <STDIN>;
exit 42;
END

subtest 'SIGKILL of locker: COMMAND keeps the lock' => sub {
    my $path = scratch_file();
    my $proc = start(@LOCKER, $path, $^X, '-e', $COMMAND);
    my ($command) = (read_line($proc->{out}) // '') =~ /^running (\d+)$/;
    ok($command, 'COMMAND is running') or return;
    is(probe($path, LOCK_SH), 0, 'the file is locked while COMMAND runs');

    kill 'KILL', $proc->{pid};
    is(reap($proc), POSIX::SIGKILL(), 'locker died of SIGKILL');
    ok(kill(0, $command), 'COMMAND still runs');
    is(probe($path, LOCK_SH), 0, 'the file is still locked: COMMAND holds the lock');
    my $other = system(@LOCKER, '-n', $path, 'true') >> 8;
    is($other, 1, 'a second locker -n cannot get the lock');

    print { $proc->{in} } "go\n";
    close $proc->{in};
    is(read_line($proc->{out}), undef, 'COMMAND ended (end of its stdout)');
    is(probe($path, LOCK_EX), 1, 'the lock is gone once COMMAND is');
};

subtest 'SIGTERM of locker: forwarded to COMMAND, lock held until it exits' => sub {
    my $path = scratch_file();
    my $proc = start(@LOCKER, $path, $^X, '-e', $COMMAND);
    like(read_line($proc->{out}) // '', qr/^running \d+$/, 'COMMAND is running');
    kill 'TERM', $proc->{pid};
    is(read_line($proc->{out}), 'got TERM', 'COMMAND got the SIGTERM');
    is(probe($path, LOCK_SH), 0, 'the file is still locked');
    print { $proc->{in} } "go\n";
    close $proc->{in};
    my $status = reap($proc);
    is($status & 127, 0, 'locker was not killed by the signal');
    is($status >> 8, 42, "locker exits with COMMAND's status");
    is(probe($path, LOCK_EX), 1, 'released after COMMAND exited');
};

subtest 'INT, HUP, QUIT, USR1 and USR2 are forwarded too' => sub {
    my $path = scratch_file();
    my $proc = start(@LOCKER, $path, $^X, '-e', $COMMAND);
    like(read_line($proc->{out}) // '', qr/^running \d+$/, 'COMMAND is running');
    for my $name (qw(INT HUP QUIT USR1 USR2)) {
        kill $name, $proc->{pid};
        is(read_line($proc->{out}), "got $name", "COMMAND got SIG$name");
    }
    is(probe($path, LOCK_SH), 0, 'the file is still locked');
    print { $proc->{in} } "go\n";
    close $proc->{in};
    is(reap($proc) >> 8, 42, "locker exits with COMMAND's status");
    is(slurp($proc->{err}), '', 'nothing on stderr');
};

# COMMAND starts a background job (inheriting its descriptors), says "bg
# ready" and exits; the job lives until its stdin (our pipe) ends.
my $BACKGROUND = <<'END';
$| = 1;
my $pid = fork // die "fork: $!";
if (!$pid) { my $line = <STDIN>; exit 0 }
print "bg ready\n";
exit 0;
END

for my $case (['', 'keeps'], ['-o', 'does not keep']) {
    my ($flag, $verb) = @$case;
    subtest "a background job of COMMAND $verb the lock" . ($flag ? " with $flag" : '') => sub {
        my $path = scratch_file();
        my $proc = start(@LOCKER, ($flag ? $flag : ()), $path, $^X, '-e', $BACKGROUND);
        is(read_line($proc->{out}), 'bg ready', 'the background job started');
        is(reap($proc), 0, 'locker exited with COMMAND');
        is(probe($path, LOCK_SH), $flag ? 1 : 0,
           $flag ? 'with -o the lock ended with locker' : 'the background job still holds the lock');
        close $proc->{in};
        is(read_line($proc->{out}), undef, 'the background job ended');
        is(probe($path, LOCK_EX), 1, 'no lock is left');
    };
}

subtest 'a range lock is inherited too' => sub {
    plan skip_all => 'no open-file-description locks here'
      unless do { require File::Locker; File::Locker::_using_ofd_locks() };
    my $path = scratch_file();
    my $proc = start(@LOCKER, '--range', '0:10', $path, $^X, '-e', $COMMAND);
    like(read_line($proc->{out}) // '', qr/^running \d+$/, 'COMMAND is running');
    kill 'KILL', $proc->{pid};
    reap($proc);
    my $other = system(@LOCKER, '-n', '--range', '5:1', $path, 'true') >> 8;
    is($other, 1, 'after SIGKILL of locker, byte 5 is still locked');
    print { $proc->{in} } "go\n";
    close $proc->{in};
    is(read_line($proc->{out}), undef, 'COMMAND ended');
    is(system(@LOCKER, '-n', '--range', '5:1', $path, 'true') >> 8, 0, 'then the range is free');
};

subtest 'classic range locks: -F and the FD form are refused, not left unlocked' => sub {
    my $path = scratch_file();
    my $marker = scratch_dir() . '/classic-ran';
    local $ENV{FILE_LOCKER_NO_OFD} = 1;
    my $err = scratch_dir() . '/classic-err';
    my $code = system(join(' ', map { "'$_'" } @LOCKER, '-F', '--range', '0:10', $path, 'sh', '-c', ': > "$0"', $marker)
                      . " 2>'$err'") >> 8;
    is($code, 64, 'exit 64');
    ok(!-e $marker, 'COMMAND did not run');
    like(slurp($err), qr/^locker: -F cannot hand a byte-range lock to COMMAND here/m, 'says why');
    $code = system(@LOCKER, '--range', '0:10', $path, 'sh', '-c', ': > "$0"', $marker) >> 8;
    is($code, 0, 'without -F it runs (locker holds the lock while COMMAND runs)');
    ok(-e $marker, 'COMMAND ran');
    my $fd_form = system('sh', '-c', '"$@" 9<>"$0"', $path, @LOCKER, '--range', '0:10', '9') >> 8;
    is($fd_form, 64, 'the FD form with a range is refused too: the lock would end with locker');
};

done_testing;
