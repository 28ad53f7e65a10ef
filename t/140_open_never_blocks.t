#!perl
# Opening a lock PATH never blocks, and a FIFO or a socket at PATH is not a
# lock file: every call refuses it with ENXIO, whoever makes the call, and
# locker does not run its command.
#
# A FIFO used to hang lock_file and lock_range (timeout or not) for a user
# who cannot open it read-write -- the read-only fallback blocked in open()
# until a writer came -- and range_conflict for everyone; a user who could
# open it read-write got a guard on it. Each call here runs in a child of
# its own and must answer within $PATIENCE seconds (a safety net for a hang,
# not a timing claim); a child that does not is killed and the test fails.
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use POSIX qw(ENXIO mkfifo);
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC pack_sockaddr_un);
use lib 't/lib';
use LockerTest qw(spawn scratch_dir read_line become_other_user);
use File::Locker qw(lock_file lock_range range_conflict);

my $PATIENCE = 10;    # seconds; only a call that hangs comes near it

my $dir = scratch_dir();
chmod 0755, $dir or die "chmod $dir: $!";    # another user may look inside

# Read-only for everyone: a user other than root cannot open it read-write
# (the owner neither: the mode says so), so the lock calls fall back to a
# read-only open, the one that used to block.
my $fifo = "$dir/read-only.fifo";
mkfifo($fifo, 0444) or die "mkfifo $fifo: $!";
chmod 0444, $fifo or die "chmod $fifo: $!";

# Writable by its owner: opened read-write, which never blocks on a FIFO.
my $own_fifo = "$dir/own.fifo";
mkfifo($own_fifo, 0600) or die "mkfifo $own_fifo: $!";

my $socket_path = "$dir/listening.sock";
socket(my $listener, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die "socket: $!";
bind($listener, pack_sockaddr_un($socket_path)) or die "bind $socket_path: $!";

# Runs CODE (returning a list of words) in a child, as another user if
# asked; returns the child's answer line, or 'no answer' when it gave none
# within $PATIENCE seconds (the child is then killed).
sub answer_of {
    my ($code, %how) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        setpgrp(0, 0);    # so a hung child and what it started die together
        become_other_user() if $how{other_user};
        $parent->say(join ' ', $code->());
    });
    my $line = eval { local $LockerTest::PATIENCE = $PATIENCE; $peer->hear };
    if (!defined $line) {
        kill 'KILL', -$peer->pid;
        $peer->wait;
        return 'no answer';
    }
    $peer->wait;
    return $line;
}

# A lock call's outcome as words: "guard" or "undef ERRNO".
sub outcome {
    my ($code) = @_;
    local $!;
    my $got = $code->();
    return defined $got ? ref $got ? 'guard' : "value $got" : 'undef ' . ($! + 0);
}

my %calls = (
    'lock_file LOCK_EX'              => sub { lock_file($_[0], LOCK_EX) },
    'lock_file LOCK_SH, timeout 1'   => sub { lock_file($_[0], LOCK_SH, timeout => 1) },
    'lock_file LOCK_EX|LOCK_NB'      => sub { lock_file($_[0], LOCK_EX | LOCK_NB) },
    'lock_file create => 0'          => sub { lock_file($_[0], LOCK_EX, create => 0, timeout => 1) },
    'lock_range LOCK_SH'             => sub { lock_range($_[0], LOCK_SH, 0, 1) },
    'lock_range LOCK_SH, timeout 1'  => sub { lock_range($_[0], LOCK_SH, 0, 0, timeout => 1) },
    'lock_range LOCK_EX, timeout 1'  => sub { lock_range($_[0], LOCK_EX, 0, 1, timeout => 1) },
    'range_conflict LOCK_EX'         => sub { range_conflict($_[0], LOCK_EX, 0, 1) },
);

my $REFUSED = 'undef ' . ENXIO;

for my $case (
    ['a FIFO the caller cannot open read-write', $fifo, other_user => 1],
    ['a FIFO the caller can open read-write', $own_fifo],
    ['a listening socket', $socket_path],
) {
    my ($what, $target, %how) = @$case;
    subtest $what => sub {
        for my $name (sort keys %calls) {
            my $call = $calls{$name};
            is answer_of(sub { outcome(sub { $call->($target) }) }, %how), $REFUSED,
              "$name: refused with ENXIO at once";
        }
    };
}

subtest 'a FIFO planted in a shared sticky directory by another user' => sub {
    plan skip_all => 'needs root to act as two users' unless $> == 0;
    my $shared = "$dir/shared";
    mkdir $shared or die "mkdir $shared: $!";
    chmod 01777, $shared or die "chmod $shared: $!";
    my $lock = "$shared/nightly.lock";
    is answer_of(sub { mkfifo($lock, 0666) ? 'planted' : "mkfifo failed: $!" }, other_user => 1),
      'planted', 'another user made a FIFO where our lock file goes';
    is answer_of(sub { outcome(sub { lock_file($lock, LOCK_EX, timeout => 1) }) }), $REFUSED,
      'lock_file refuses it: no guard on a FIFO';
    is answer_of(sub { outcome(sub { lock_range($lock, LOCK_EX, 0, 0, timeout => 1) }) }), $REFUSED,
      'lock_range refuses it';
};

# A regular file under another process's lease (as an NFS server's
# delegations and Samba's oplocks are) cannot be opened until the lease is
# broken; a non-blocking open says EWOULDBLOCK. That must not come back as
# "busy": the open waits for the break, within the timeout.
my $F_SETLEASE = 1024;    # Linux
sub lease_holder {
    my ($path, $on_break) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        local $SIG{IO} = sub { fcntl($fh, $F_SETLEASE, Fcntl::F_UNLCK()) if $on_break eq 'release' };
        fcntl($fh, $F_SETLEASE, Fcntl::F_RDLCK()) or do { $parent->say("no lease: $!"); return };
        $parent->say('leased');
        $parent->hear;    # until the parent is done
    });
    return ($peer, $peer->hear // 'end of file');
}

subtest 'a file under a lease: the open waits for the break, never an early busy' => sub {
    my $path = "$dir/leased";
    { open my $fh, '>', $path or die "create $path: $!" }

    my ($holder, $word) = lease_holder($path, 'release');
    plan skip_all => "cannot take a lease here ($word)" unless $word eq 'leased';
    my $guard = lock_file($path, LOCK_EX, timeout => $PATIENCE);
    ok $guard, 'a holder that gives the lease up on the break: the lock is granted'
      or diag "\$! = $!";
    undef $guard;
    $holder->wait;

    ($holder, $word) = lease_holder($path, 'keep');
    my $t0 = LockerTest::now();
    local $!;
    $guard = lock_range($path, LOCK_EX, 0, 1, timeout => 0.5);
    my ($err, $took) = ($! + 0, LockerTest::now() - $t0);
    ok !$guard && $err == POSIX::ETIMEDOUT(), 'a holder that keeps it: ETIMEDOUT'
      or diag "got " . ($guard ? 'a guard' : "\$! = $err");
    cmp_ok $took, '>=', 0.5, 'not before the deadline';
    $guard = lock_file($path, LOCK_EX | LOCK_NB);
    ok !$guard && $!{EWOULDBLOCK}, 'LOCK_NB: one try, EWOULDBLOCK';
    $holder->wait;
};

# locker on a FIFO or socket: no command runs, whoever runs it.
my @LOCKER = ($^X, '-Mblib', 'bin/locker');
my $markers = "$dir/markers";    # where COMMAND would leave its trace
mkdir $markers or die "mkdir $markers: $!";
chmod 01777, $markers or die "chmod $markers: $!";
my $run = 0;
for my $case (
    ['-n, a FIFO the caller cannot open read-write', $fifo, ['-n'], other_user => 1],
    ['no -n or -w, a FIFO the caller cannot open read-write', $fifo, [], other_user => 1],
    ['-w 1, a FIFO the caller cannot open read-write', $fifo, ['-w', 1], other_user => 1],
    ['-n, a FIFO the caller can open read-write', $own_fifo, ['-n']],
    ['-n, a listening socket', $socket_path, ['-n']],
    ['--range 0:1 -n, a FIFO the caller can open read-write', $own_fifo, ['--range', '0:1', '-n']],
) {
    my ($what, $target, $options, %how) = @$case;
    my $marker = "$markers/ran." . ++$run;
    subtest "locker $what" => sub {
        my $answer = answer_of(sub {
            open my $err, '>', '/dev/null' or die "open /dev/null: $!";
            open STDERR, '>&', $err or die "dup: $!";
            system @LOCKER, @$options, $target, 'sh', '-c', 'echo ran > "$0"', $marker;
            return ($? >> 8, $? & 127, -e $marker ? 'ran' : 'did-not-run');
        }, %how);
        isnt $answer, 'no answer', 'locker returned';
        my ($code, $signal, $ran) = split ' ', $answer;
        is $ran, 'did-not-run', 'COMMAND did not run';
        ok $code != 0 && !$signal, 'locker failed with an exit code' or diag "exit $code, signal $signal";
    };
}

done_testing;
