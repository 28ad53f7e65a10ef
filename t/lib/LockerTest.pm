package LockerTest;

# Helpers for tests that need real processes: a child runs a code block and
# talks to the parent over a pair of pipes, one line at a time. Lines are the
# only synchronisation; nothing sleeps. hear() carries an alarm as a safety
# net so a broken child fails the test instead of hanging it.
#
# Below those, the small helpers several test files share: a clock, opens,
# holder children of each kind, and calls that capture $! with their result.

use strict;
use warnings;
use Exporter 'import';
use Fcntl qw(:flock O_RDONLY O_WRONLY O_CREAT);
use File::Spec ();
use File::Temp ();
use IO::Handle;
use POSIX ();
use Test::More ();
use Time::HiRes ();

our @EXPORT_OK = qw(
  scratch_dir cross_dirs scratch_file spawn fork_peer probe holder lock_holder range_holder
  fd_count task_count now read_line open_lock open_rw slurp in_path set_members
  become_other_user blocked_requests lockf_probe
  our_holder patient_holder release_holder release_and_wait release_on_waiter
  conflicts try_flock try_range try_lock_file refused_ok
  classic_files run_classic rerun_classic_ok
);

our $PATIENCE = $ENV{LOCKER_TEST_PATIENCE} || 60;    # seconds, safety net only

# Lock files go in a fresh directory under LOCKER_TEST_DIR when it is set
# (a network or cluster filesystem to test against), else under TMPDIR.
my $dir;
sub scratch_dir {
    return $dir //= File::Temp::tempdir('locker-test-XXXXXX', CLEANUP => 1,
        $ENV{LOCKER_TEST_DIR} ? (DIR => $ENV{LOCKER_TEST_DIR}) : (TMPDIR => 1));
}

# cross_dirs(): for tests across two clients of one shared filesystem, the
# two directories named by LOCKER_TEST_DIRS=A:B, each with a fresh
# subdirectory of the same name (made through A, removed at exit), as a list
# (A_SUB, B_SUB). Returns the empty list with the reason in $@ when the
# variable is unset or A and B do not show the same files.
sub cross_dirs {
    $@ = '';
    my $dirs = $ENV{LOCKER_TEST_DIRS};
    unless (defined $dirs && length $dirs) {
        $@ = 'LOCKER_TEST_DIRS=A:B is not set (two mounts of one shared filesystem)';
        return;
    }
    my ($a, $b, @rest) = split /:/, $dirs;
    unless (defined $b && !@rest && -d $a && -d $b) {
        $@ = "LOCKER_TEST_DIRS=$dirs: want two existing directories A:B";
        return;
    }
    my $sub  = File::Temp::tempdir('locker-cross-XXXXXX', DIR => $a, CLEANUP => 1);
    my $name = (File::Spec->splitdir($sub))[-1];
    my $mark = "$sub/mark.$$";
    open my $fh, '>', $mark or die "create $mark: $!";
    print {$fh} "$$\n";
    close $fh or die "close $mark: $!";
    unless (-f "$b/$name/mark.$$" && slurp("$b/$name/mark.$$") eq "$$\n") {
        $@ = "LOCKER_TEST_DIRS=$dirs: a file made in $a does not show in $b";
        return;
    }
    unlink $mark;
    return ($sub, "$b/$name");
}

my $serial = 0;
sub scratch_file {
    my ($name) = @_;
    my $path = scratch_dir() . '/' . ($name // 'lock' . ++$serial);
    open my $fh, '>>', $path or die "create $path: $!";
    close $fh;
    return $path;
}

# fork_peer(CODE) forks with a pair of pipes between the two processes; CODE
# runs in the child with a LockerTest::Peer for the parent and is what ends
# the child (nothing is wrapped around it). The parent gets a
# LockerTest::Peer for the child.
sub fork_peer {
    my ($code) = @_;
    pipe(my $to_child_r, my $to_child_w) or die "pipe: $!";
    pipe(my $to_parent_r, my $to_parent_w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $to_child_w;
        close $to_parent_r;
        $code->(LockerTest::Peer->new($to_child_r, $to_parent_w, getppid));
    }
    close $to_child_r;
    close $to_parent_w;
    return LockerTest::Peer->new($to_parent_r, $to_child_w, $pid);
}

# spawn(CODE) forks; CODE runs in the child with a LockerTest::Peer for the
# parent and the child exits 0 when CODE returns (255 if it dies). The parent
# gets a LockerTest::Peer for the child.
sub spawn {
    my ($code) = @_;
    return fork_peer(sub {
        my ($peer) = @_;
        my $ok = eval { $code->($peer); 1 };
        print STDERR "child $$ died: $@" unless $ok;
        POSIX::_exit($ok ? 0 : 255);
    });
}

# lock_holder(TAKE) starts a child that calls TAKE, which takes a lock and
# returns the code that lets it go (or a false value with $! set when it
# could not). The child says "locked" (or "failed ERRNO" and ends), waits
# for "release", runs the code TAKE gave and says "released". Returns its
# peer once the lock is held.
sub lock_holder {
    my ($take) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $let_go = $take->();
        if ($let_go) { $parent->say('locked') } else { $parent->say('failed ' . ($! + 0)); return }
        $parent->expect('release');
        $let_go->();
        $parent->say('released');
    });
    $peer->expect('locked');
    return $peer;
}

# holder(PATH, MODE) starts a child that takes CORE::flock(MODE) on its own
# handle of PATH, says "locked" (or "failed ERRNO") and releases when told
# "release"; returns its peer once the lock is held.
sub holder {
    my ($path, $mode) = @_;
    return lock_holder(sub {
        my $fh = open_lock($path);
        flock $fh, $mode or return;
        return sub { flock $fh, LOCK_UN; close $fh };
    });
}

# range_holder(PATH, MODE, OFFSET, LENGTH) starts a child that holds
# File::Locker::lock_range(MODE | LOCK_NB) on [OFFSET, OFFSET+LENGTH) of
# PATH through its own read-write handle, kept open until it lets go
# (closing it would drop classic locks), until told "release". Returns its
# peer once it holds. The caller has loaded File::Locker.
sub range_holder {
    my ($path, $mode, $off, $len) = @_;
    return lock_holder(sub {
        my $fh = open_rw($path);
        my $g  = File::Locker::lock_range($fh, $mode | LOCK_NB, $off, $len) or return;
        return sub { $g->release; close $fh };
    });
}

# probe(PATH, MODE) asks a fresh process whether MODE|LOCK_NB on its own open
# of PATH (a directory is opened O_RDONLY|O_DIRECTORY) would be granted right
# now: 1 granted, 0 busy (EWOULDBLOCK).
sub probe {
    my ($path, $mode) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $fh;
        if (-d $path) {
            sysopen($fh, $path, O_RDONLY | Fcntl::O_DIRECTORY()) or die "sysopen $path: $!";
        }
        else {
            open $fh, '<', $path or die "open $path: $!";
        }
        my $got = flock $fh, $mode | LOCK_NB;
        $parent->say($got ? 'granted' : 'busy ' . ($! + 0));
    });
    my $answer = $peer->hear;
    $peer->wait;
    return 1 if $answer eq 'granted';
    return 0 if $answer eq 'busy ' . POSIX::EWOULDBLOCK();
    die "probe of $path: unexpected answer '$answer'";
}

# Open descriptors of this process.
sub fd_count {
    opendir my $dh, '/proc/self/fd' or die "opendir /proc/self/fd: $!";
    my $n = grep { /^\d+$/ } readdir $dh;
    closedir $dh;
    return $n - 1;    # the directory handle itself
}

# Threads of this process.
sub task_count {
    opendir my $dh, '/proc/self/task' or die "opendir /proc/self/task: $!";
    return scalar grep { /^\d+$/ } readdir $dh;
}

# In a child: become a user who cannot write files made read-only for
# everyone. Root turns into nobody (uid and gid 65534); anyone else already
# is such a user.
sub become_other_user {
    return unless $> == 0;
    POSIX::setgid(65534) or die "setgid: $!";
    POSIX::setuid(65534) or die "setuid: $!";
    die "still root\n" if $> == 0;
}

# blocked_requests(INO): the lock requests /proc/locks lists as blocked
# ("->") on inode INO, each as { kind => 'FLOCK'|'POSIX'|'OFDLCK', type =>
# 'READ'|'WRITE', pid } (the kernel shows OFD requests with pid -1); in
# scalar context, how many. None when /proc/locks cannot be read.
sub blocked_requests {
    my ($ino) = @_;
    my @found;
    open my $locks, '<', '/proc/locks' or return @found;
    while (my $line = <$locks>) {
        next unless $line =~ /^\s*\d+:\s+->\s+(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/;
        push @found, { kind => $1, type => $2, pid => $3 } if $4 == $ino;
    }
    return @found;
}

# lockf_probe(PATH, MODE, OFFSET, LENGTH): a fresh Python process asks
# fcntl.lockf (classic POSIX locks, which conflict with OFD locks and with
# other processes' classic ones) for MODE (LOCK_SH or LOCK_EX) on LENGTH
# bytes at OFFSET of PATH without waiting: "free" or "busy" (dies on any
# other outcome).
sub lockf_probe {
    my ($path, $mode, $offset, $length) = @_;
    my $script = <<'PY';
import errno, fcntl, sys
path, mode, start, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
f = open(path, 'r+b' if mode == 'EX' else 'rb')
try:
    fcntl.lockf(f, (fcntl.LOCK_EX if mode == 'EX' else fcntl.LOCK_SH) | fcntl.LOCK_NB, length, start)
    print('free')
except OSError as e:
    print('busy' if e.errno in (errno.EAGAIN, errno.EACCES) else 'error %d' % e.errno)
PY
    open(my $py, '-|', 'python3', '-c', $script, $path, $mode == LOCK_EX ? 'EX' : 'SH', $offset, $length)
      or die "python3: $!";
    my $answer = read_line($py, undef, 'python3') // 'no answer';
    close $py;
    die "lockf probe of $path: '$answer', exit status $?\n" unless $? == 0 && $answer =~ /^(?:free|busy)$/;
    return $answer;
}

# Seconds on the monotonic clock.
sub now { Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) }

# read_line(FH, SECONDS, FROM): the next line from FH without its newline,
# undef at end of file. An alarm after SECONDS (default $PATIENCE) is the
# safety net: it dies naming FROM (default "a pipe").
sub read_line {
    my ($fh, $seconds, $from) = @_;
    $seconds //= $PATIENCE;
    $from    //= 'a pipe';
    local $SIG{ALRM} = sub { die "no line from $from in $seconds s\n" };
    my $left = alarm $seconds;
    my $line = readline $fh;
    alarm $left;
    chomp $line if defined $line;
    return $line;
}

# open_lock(PATH): PATH opened read-only, enough for flock(2) in either mode.
sub open_lock {
    my ($path) = @_;
    open my $fh, '<', $path or die "open $path: $!";
    return $fh;
}

# open_rw(PATH): PATH opened read-write (LOCK_EX and F_WRLCK ranges need it).
sub open_rw {
    my ($path) = @_;
    open my $fh, '+<', $path or die "open $path: $!";
    return $fh;
}

# slurp(PATH): the whole content of PATH ('' when empty).
sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or die "open $path: $!";
    local $/;
    return scalar(readline $fh) // '';
}

# in_path(NAME): full path of an executable NAME found in PATH, or undef.
sub in_path {
    my ($name) = @_;
    for my $dir (File::Spec->path) {
        my $file = File::Spec->catfile($dir, $name);
        return $file if -f $file && -x _;
    }
    return undef;
}

# set_members(SIGSET): the signal numbers in a POSIX::SigSet, as an array ref.
sub set_members {
    my ($set) = @_;
    return [ grep { $set->ismember($_) } 1 .. POSIX::SIGRTMAX() ];
}

# conflicts(HELD, WANTED): whether a flock(2) request for WANTED meets HELD.
sub conflicts { my ($held, $wanted) = @_; return $held == LOCK_EX || $wanted == LOCK_EX }

# our_holder(PATH, MODE) starts a child that takes File::Locker::flock(MODE)
# on its own read-only handle of PATH; returns its peer and its first word,
# "locked" or "failed ERRNO". Either way the child then waits for "release",
# unlocks with LOCK_UN (the handle stays open, so only the unlock can free
# the lock) and answers "released"; it exits when the parent closes the pipe
# (peer->wait). The caller has loaded File::Locker.
sub our_holder {
    my ($path, $mode) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        my $locked = File::Locker::flock($fh, $mode);
        $parent->say($locked ? 'locked' : 'failed ' . ($! + 0));
        $parent->expect('release');
        if ($locked) {
            File::Locker::flock($fh, LOCK_UN) or die "unlock: $!";
        }
        $parent->say('released');
        $parent->hear;    # end of file: the parent is done with us
        close $fh;
    });
    return ($peer, $peer->hear // 'end of file');
}

# patient_holder(PATH, MODE, PATIENCE): like holder (CORE::flock MODE on its
# own handle, "locked", released on "release"), except that it never waits
# for the lock (it says "failed ERRNO" if the file is busy) and if no word
# comes within PATIENCE seconds it lets go on its own and says "gave up": a
# wait that wrongly goes on then ends, and the test fails instead of hanging.
sub patient_holder {
    my ($path, $mode, $patience) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        unless (CORE::flock($fh, $mode | LOCK_NB)) { $parent->say('failed ' . ($! + 0)); return }
        $parent->say('locked');
        my $word = eval { local $PATIENCE = $patience; $parent->hear };
        CORE::flock($fh, LOCK_UN);
        close $fh;
        if (defined $word) {
            $parent->say('released');
        }
        else {
            $parent->say('gave up');
            $parent->hear;    # the parent's "release", still to come
        }
    });
    $peer->expect('locked');
    return $peer;
}

# release_holder(PEER, ALREADY_TOLD): tells a holder child to let go (unless
# already told) and reaps it; returns its last word, "released" (or "gave up"
# from a patient_holder whose patience ran out), "end of file" if none.
sub release_holder {
    my ($peer, $already_told) = @_;
    $peer->say('release') unless $already_told;
    my $word = $peer->hear // 'end of file';
    $peer->wait;
    return $word;
}

# release_and_wait(PEER): tells a holder child to let go, dies unless it
# answers "released", and reaps it; returns its wait status.
sub release_and_wait {
    my ($peer) = @_;
    $peer->say('release');
    $peer->expect('released');
    return $peer->wait;
}

# release_on_waiter(PATH) starts a holder of LOCK_EX on PATH that, once told
# the pid of a waiter, releases as soon as /proc/locks shows that process
# blocked on PATH's inode with a WRITE flock request: the waiter is then
# certainly waiting, not about to try. Returns its peer once it holds.
sub release_on_waiter {
    my ($path) = @_;
    my $ino = (stat $path)[1];
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        CORE::flock($fh, LOCK_EX) or die "flock: $!";
        $parent->say('locked');
        my $waiter  = $parent->hear // die "no waiter pid\n";
        my $give_up = now() + $PATIENCE;
        until (grep { $_->{kind} eq 'FLOCK' && $_->{type} eq 'WRITE' && $_->{pid} == $waiter }
               blocked_requests($ino)) {
            die "pid $waiter never blocked on $path\n" if now() > $give_up;
        }
        CORE::flock($fh, LOCK_UN) or die "unlock: $!";
        $parent->say('released');
        $parent->hear;    # end of file: the parent is done with us
    });
    $peer->expect('locked');
    return $peer;
}

# Runs CODE in scalar context with $! cleared first; returns its result and
# $! (as a number) right after.
sub _with_errno {
    my ($code) = @_;
    local $!;
    $! = 0;
    my $got = $code->();
    return ($got, $! + 0);
}

# try_flock(FH, OP), try_range(ARGS), try_lock_file(ARGS): File::Locker's
# flock, lock_range or lock_file called with ARGS; each returns the result
# and $! (as a number) right after. The caller has loaded File::Locker.
sub try_flock     { my @args = @_; return _with_errno(sub { &File::Locker::flock(@args) }) }
sub try_range     { my @args = @_; return _with_errno(sub { &File::Locker::lock_range(@args) }) }
sub try_lock_file { my @args = @_; return _with_errno(sub { &File::Locker::lock_file(@args) }) }

# refused_ok(GUARD, ERRNO, WANT, WHAT): expects undef with $! == WANT from a
# try_range or try_lock_file result.
sub refused_ok {
    my ($guard, $errno, $want, $what) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    Test::More::ok(!defined $guard, "$what: undef") or Test::More::diag("got $guard");
    Test::More::is($errno, $want, "$what: \$! is " . POSIX::strerror($want));
}

# ---- the OFD/classic matrix ---------------------------------------------
#
# Range locks use open-file-description locks where the kernel has them, and
# classic POSIX locks with a process-wide table where it does not, or where
# FILE_LOCKER_NO_OFD is true; the choice is made once, when File::Locker
# loads. The suite runs as it finds the kernel; the files below must also
# pass with the fallback forced, and this is the one place that says which
# and how.

# classic_files(): the test files to run again with classic locks (by
# t/290): every range test, and with LOCKER_TEST_CLASSIC_ALL set (CI) the
# stress and fault suites too, which take minutes.
sub classic_files {
    my @files = grep { !/290_/ } sort glob 't/2[0-9][0-9]_*.t';
    push @files, grep { -e } qw(t/520_stress_suite.t t/530_faults.t t/540_async_stress.t)
      if $ENV{LOCKER_TEST_CLASSIC_ALL};
    return @files;
}

# run_classic(FILE | '-e' CODE, NAME => VALUE...): runs FILE (or CODE) in a
# fresh perl with this @INC, classic locks forced and the given environment
# added; returns its wait status and what it printed on stdout (its stderr
# goes to ours).
sub run_classic {
    my @program = $_[0] eq '-e' ? splice(@_, 0, 2) : shift;
    my (%env) = @_;
    local $ENV{FILE_LOCKER_NO_OFD} = 1;
    local @ENV{keys %env} = values %env;
    open(my $kid, '-|', $^X, (map { "-I$_" } grep { !ref } @INC), @program)
      or die "run @program: $!";
    my $output = do { local $/; <$kid> } // '';
    close $kid;
    return ($?, $output);
}

# rerun_classic_ok(LABEL, NAME => VALUE...): runs this test file again with
# classic locks forced (see run_classic) and reports each of its assertions
# here as one, named "LABEL: its name", then that it reported at least three
# and exited with status 0.
sub rerun_classic_ok {
    my ($label, %env) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my ($status, $output) = run_classic($0, %env);
    my $seen = 0;
    for (split /^/, $output) {
        next unless /^(not )?ok \d+(?: - (.*))?$/;
        $seen++;
        Test::More::ok(!$1, "$label: " . ($2 // 'an assertion'));
    }
    Test::More::ok($seen >= 3, "$label: the re-run reported $seen results");
    Test::More::is($status, 0, "$label: the re-run exited with status 0")
      or Test::More::diag($output);
}

package LockerTest::Peer;

sub new {
    my ($class, $in, $out, $pid) = @_;
    $out->autoflush(1);
    return bless { in => $in, out => $out, pid => $pid }, $class;
}

sub pid { $_[0]{pid} }

sub say {
    my ($self, $line) = @_;
    print { $self->{out} } "$line\n" or die "write to peer $self->{pid}: $!";
}

# Next line from the peer, without its newline; undef at end of file.
sub hear {
    my ($self) = @_;
    return LockerTest::read_line($self->{in}, $LockerTest::PATIENCE, "peer $self->{pid}");
}

sub expect {
    my ($self, $want) = @_;
    my $got = $self->hear;
    die "peer $self->{pid}: expected '$want', got '" . ($got // 'end of file') . "'\n"
      unless defined $got && $got eq $want;
    return $got;
}

# Waits for the child to exit; returns its wait status ($?).
sub wait {
    my ($self) = @_;
    close $self->{out};
    waitpid $self->{pid}, 0;
    return $?;
}

1;
