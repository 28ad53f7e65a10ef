#!perl
# Who holds and who waits: lock_holders(PATH, waiters => 1), locker
# --holders --waiters, escaping of command lines (a newline in a holder's
# argv must not forge a row), and -v naming only holders that conflict with
# the requested lock.

use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock SEEK_SET);
use POSIX ();
use File::Locker qw(lock_holders lock_range);
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir spawn holder release_holder read_line slurp);

$SIG{PIPE} = 'IGNORE';
my @LOCKER = ($^X, '-Mblib', 'bin/locker');

# Runs locker ARGS; returns (exit code, stdout, stderr).
sub run_locker {
    my @args = @_;
    my ($out, $err) = map { scratch_dir() . "/$_" . int(rand 1e9) } 'out', 'err';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null' or POSIX::_exit(120);
        open STDOUT, '>', $out or POSIX::_exit(121);
        open STDERR, '>', $err or POSIX::_exit(122);
        { no warnings 'exec'; exec @LOCKER, @args }
        POSIX::_exit(123);
    }
    waitpid $pid, 0;
    return ($? >> 8, slurp($out), slurp($err));
}

# A child that asks for an exclusive flock on PATH and blocks behind the
# current holder; returns its peer once /proc/locks shows it waiting.
sub waiter {
    my ($path) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        flock $fh, LOCK_EX or die "flock: $!";
        $parent->say('got it');
        $parent->expect('release');
    });
    my $deadline = time + 60;
    until (grep { $_->{waiting} && ($_->{pid} // 0) == $peer->pid } lock_holders($path, waiters => 1)) {
        die "the waiter never blocked\n" if time > $deadline;
        select undef, undef, undef, 0.01;    # polling /proc/locks: nothing to block on
    }
    return $peer;
}

subtest 'lock_holders(PATH, waiters => 1)' => sub {
    my $path   = scratch_file();
    my $holder = holder($path, LOCK_EX);
    my $waiter = waiter($path);

    my @plain = lock_holders($path);
    is(scalar(grep { $_->{waiting} } @plain), 0, 'without the option: holders only');
    ok((grep { $_->{pid} == $holder->pid } @plain), 'the holder is listed');

    my @all = lock_holders($path, waiters => 1);
    my ($waits) = grep { $_->{waiting} } @all;
    ok($waits, 'with waiters => 1: a waiting entry');
    is($waits->{pid}, $waiter->pid, 'naming the waiting process');
    is($waits->{kind}, 'flock', 'kind flock');
    is($waits->{mode}, LOCK_EX, 'mode LOCK_EX');
    like($waits->{command} // '', qr/\S/, 'with its command line');
    ok((grep { !$_->{waiting} && $_->{pid} == $holder->pid } @all), 'the holder is still listed, not waiting');

    eval { lock_holders($path, no_such => 1) };
    like($@, qr/^lock_holders: unknown option 'no_such'/, 'an unknown option croaks');
    eval { lock_holders($path, 'waiters') };
    like($@, qr/^lock_holders: odd number of option arguments/, 'an odd option list croaks');

    is(release_holder($holder), 'released', 'holder released');
    is($waiter->hear, 'got it', 'the waiter got the lock');
    $waiter->say('release');
    $waiter->wait;
    is(scalar(grep { $_->{waiting} } lock_holders($path, waiters => 1)), 0, 'nobody waits now');
};

subtest 'locker --holders --waiters' => sub {
    my $path   = scratch_file();
    my $holder = holder($path, LOCK_EX);
    my $waiter = waiter($path);
    my ($hpid, $wpid) = ($holder->pid, $waiter->pid);

    my ($code, $out) = run_locker('--holders', '--waiters', $path);
    is($code, 0, 'exits 0');
    like($out, qr/^PID\s+STATE\s+KIND\s+MODE\s+RANGE\s+COMMAND$/m, 'a header with a STATE column');
    like($out, qr/^$hpid\s+holds\s+flock\s+exclusive\s+whole file\s/m, 'the holder holds');
    like($out, qr/^$wpid\s+waits\s+flock\s+exclusive\s+whole file\s/m, 'the waiter waits');

    ($code, $out) = run_locker('--holders', $path);
    is($code, 0, '--holders alone exits 0');
    unlike($out, qr/^$wpid\s/m, 'and does not list the waiter');
    like($out, qr/^$hpid\s+flock\s+exclusive\s+whole file/m, 'but lists the holder as before');

    release_holder($holder);
    is($waiter->hear, 'got it', 'the waiter got the lock');
    $waiter->say('release');
    $waiter->wait;
};

subtest 'command lines are escaped: a newline cannot forge a row' => sub {
    my $path   = scratch_file();
    my $forged = "x\n12345    flock  exclusive whole file            forged\e[2J\\";
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        flock $fh, LOCK_EX or die "flock: $!";
        $0 = "holder $forged \x{7f}\x{9b}";    # Linux shows $0 as the command line
        $parent->say('locked');
        $parent->expect('release');
    });
    $peer->expect('locked');
    my $pid = $peer->pid;

    my ($code, $out) = run_locker('--holders', $path);
    is($code, 0, '--holders exits 0');
    my @rows = grep { /^\d/ } split /\n/, $out;
    is(scalar @rows, 1, 'one row, for the one holder') or diag($out);
    unlike($out, qr/^12345/m, 'no forged row');
    unlike($out, qr/[\x00-\x09\x0b-\x1f\x7f]/, 'no control characters in the output');
    like($rows[0] // '', qr/^$pid\s.*holder x\\n12345 .*forged\\e\[2J\\\\/, 'the newline, escape and backslash shown escaped');

    my ($vcode, undef, $err) = run_locker('-v', '-w', '0.1', $path, 'true');
    is($vcode, 1, '-v -w 0.1: times out');
    unlike($err, qr/[\x00-\x09\x0b-\x1f\x7f]/, '-v: no control characters either');
    like($err, qr/holder x\\n12345/, '-v: the command line shown escaped');

    $peer->say('release');
    $peer->wait;
};

subtest '-v names only holders that conflict with the request' => sub {
    my $path = scratch_file();
    open my $fh, '>', $path or die;
    print {$fh} 'x' x 100;
    close $fh;
    # Two range holders in one child: bytes 0-9 and 50-59, exclusive.
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $rw, '+<', $path or die "open: $!";
        my $low  = lock_range($rw, LOCK_EX, 0, 10) or die "low: $!";
        open my $rw2, '+<', $path or die "open: $!";
        my $high = lock_range($rw2, LOCK_EX, 50, 10) or die "high: $!";
        $parent->say('locked');
        $parent->expect('release');
    });
    $peer->expect('locked');
    my $flock_holder = holder($path, LOCK_SH);
    my $fpid = $flock_holder->pid;

    my ($code, undef, $err) = run_locker('-v', '-w', '0.1', '--range', '0:5', $path, 'true');
    is($code, 1, '--range 0:5 is busy');
    like($err, qr/bytes 0\+10/, 'names the holder of bytes 0-9');
    unlike($err, qr/bytes 50\+10/, 'not the holder of bytes 50-59');
    unlike($err, qr/\bflock\b/, 'not the flock holder, which a range lock does not meet');

    ($code, undef, $err) = run_locker('-v', '-w', '0.1', $path, 'true');
    is($code, 1, 'an exclusive whole-file lock is busy');
    like($err, qr/shared flock whole file by pid $fpid/, 'names the shared flock holder');
    unlike($err, qr/bytes/, 'not the range holders, which flock does not meet');

    ($code, undef, $err) = run_locker('-v', '-s', '-n', $path, 'true');
    is($code, 0, 'a shared whole-file lock is granted beside them');

    release_holder($flock_holder);
    $peer->say('release');
    $peer->wait;
};

done_testing;
