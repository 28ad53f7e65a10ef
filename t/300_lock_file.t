#!perl
# lock_file and its guards: whole-file locks on a PATH or on a handle, the
# lock-file options (create, perms, follow_symlinks, unlink), the read-only
# fallback, lock outcomes (busy, timed out, granted after a wait), programmer
# errors, guard methods, descriptor hygiene and close-on-exec. Another
# holder is always a real process; the probes use CORE::flock, which
# conflicts with lock_file because both use flock(2).

use strict;
use warnings;

use Test::More;
use Cwd qw(realpath);
use Fcntl qw(:flock F_SETFD);
use IO::File;
use POSIX qw(EBADF ENOENT ELOOP EACCES EWOULDBLOCK ETIMEDOUT);
use Scalar::Util qw(blessed refaddr);
use File::Locker qw(:flock lock_file);
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir spawn probe holder fd_count slurp release_holder release_on_waiter try_lock_file refused_ok now open_lock);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

my $GUARD = 'File::Locker::Guard';

sub spew {
    my ($path, $data) = @_;
    open my $fh, '>', $path or die "open $path: $!";
    print {$fh} $data or die "write $path: $!";
    close $fh or die "close $path: $!";
}

# The targets of a process's descriptors as seen by a command started with
# system(): a fresh perl writes readlink(/proc/self/fd/N) for each N to a file.
my $FD_LISTER = <<'END';
my ($out) = @ARGV;
opendir my $dir, '/proc/self/fd' or die "opendir: $!";
my @targets;
for my $n (grep { /^\d+$/ } readdir $dir) {
    my $target = readlink "/proc/self/fd/$n";
    push @targets, $target if defined $target;
}
open my $fh, '>', $out or die "open $out: $!";
print {$fh} "$_\n" for @targets;
close $fh or die "close $out: $!";
END

sub inherited_targets {
    my $out = scratch_file();
    system($^X, '-e', $FD_LISTER, $out) == 0 or die "fd lister failed: $?";
    return map { chomp; $_ } split /^/, slurp($out);
}

subtest 'lock_file(PATH): guard, release, accessors' => sub {
    my $path = scratch_file();
    my $g = lock_file($path, LOCK_EX);
    ok(blessed($g) && $g->isa($GUARD), "returns a $GUARD") or diag(explain $g);
    is(probe($path, LOCK_SH), 0, 'another process sees the lock busy (LOCK_SH)');
    is(probe($path, LOCK_EX), 0, 'another process sees the lock busy (LOCK_EX)');
    ok($g->is_locked, 'is_locked is true while held');
    is($g->mode, LOCK_EX, 'mode is LOCK_EX');
    is($g->path, $path, 'path returns PATH');
    is($g->offset, undef, 'offset is undef for a whole-file lock');
    is($g->length, undef, 'length is undef for a whole-file lock');

    ok($g->release, 'release returns true');
    ok(!$g->is_locked, 'is_locked is false after release');
    is(probe($path, LOCK_EX), 1, 'release frees the lock');

    # A new handle in this process, likely on the guard's old descriptor
    # number, and another process, both holding locks of their own: a second
    # release must touch neither.
    my $again = open_lock($path);
    flock($again, LOCK_SH) or die "flock: $!";
    my $other = holder($path, LOCK_SH);
    ok($g->release, 'a second release returns true');
    ok(!$g->is_locked, 'is_locked is still false');
    ok(defined fileno($again), 'a second release is a no-op: our new handle is still open');
    is(probe($path, LOCK_EX), 0, 'a second release is a no-op: the other locks stay');
    is(release_holder($other), 'released', 'other holder released');
    is(probe($path, LOCK_EX), 0, "our new handle's lock is still held");
    close $again;

    my $sh = lock_file($path, LOCK_SH);
    is($sh->mode, LOCK_SH, 'mode is LOCK_SH for a shared lock');
    is(probe($path, LOCK_SH), 1, 'a shared lock admits another LOCK_SH');
    is(probe($path, LOCK_EX), 0, 'a shared lock excludes LOCK_EX');
    $sh->release;

    my $nb = lock_file($path, LOCK_EX | LOCK_NB);
    is($nb->mode, LOCK_EX, 'mode of LOCK_EX|LOCK_NB is LOCK_EX');
    $nb->release;

    {
        my $scoped = lock_file($path, LOCK_EX);
        is(probe($path, LOCK_EX), 0, 'held inside the scope');
    }
    is(probe($path, LOCK_EX), 1, 'the guard going out of scope releases the lock');
};

subtest 'lock_file(FH): glob ref, *FH, IO::File' => sub {
    my $path = scratch_file();

    my $fh = open_lock($path);
    my $g = lock_file($fh, LOCK_EX);
    ok(blessed($g) && $g->isa($GUARD), "glob ref: returns a $GUARD");
    is(probe($path, LOCK_EX), 0, 'glob ref: another process sees the lock busy');
    is(refaddr($g->fh), refaddr($fh), 'glob ref: fh returns the same handle');
    is($g->path, undef, 'glob ref: path is undef');
    is($g->mode, LOCK_EX, 'glob ref: mode');
    $g->release;
    is(probe($path, LOCK_EX), 1, 'glob ref: release frees the lock');
    ok(defined fileno($fh), 'glob ref: the handle stays open after release');
    close $fh;

    open(FH, '<', $path) or die "open $path: $!";
    $g = lock_file(*FH, LOCK_SH);
    ok(blessed($g) && $g->isa($GUARD), "*FH: returns a $GUARD");
    is(probe($path, LOCK_EX), 0, '*FH: another process sees the lock busy');
    is(refaddr($g->fh), refaddr(\*FH), '*FH: fh returns the same handle');
    is(*{ $g->fh }{IO}, *FH{IO}, '*FH: same IO object');
    is($g->path, undef, '*FH: path is undef');
    is($g->mode, LOCK_SH, '*FH: mode');
    undef $g;
    is(probe($path, LOCK_EX), 1, '*FH: scope exit frees the lock');
    close FH;

    my $io = IO::File->new($path, '<') or die "IO::File $path: $!";
    $g = lock_file($io, LOCK_EX);
    ok(blessed($g) && $g->isa($GUARD), "IO::File: returns a $GUARD");
    is(probe($path, LOCK_EX), 0, 'IO::File: another process sees the lock busy');
    is(refaddr($g->fh), refaddr($io), 'IO::File: fh returns the same object');
    isa_ok($g->fh, 'IO::File', 'IO::File: fh');
    is($g->path, undef, 'IO::File: path is undef');
    $g->release;
    is(probe($path, LOCK_EX), 1, 'IO::File: release frees the lock');
    $io->close;

    my $closed = open_lock($path);
    close $closed;
    refused_ok(try_lock_file($closed, LOCK_EX), EBADF, 'closed handle');

    open my $mem, '<', \(my $buffer = "in memory\n") or die "open in-memory: $!";
    refused_ok(try_lock_file($mem, LOCK_EX), EBADF, 'in-memory handle');
};

subtest 'lock files: content, creation, perms, symlinks, directories' => sub {
    my $path = scratch_file();
    spew($path, "keep me\n");
    my $g = lock_file($path, LOCK_EX);
    is(slurp($path), "keep me\n", 'existing content survives locking');
    $g->release;
    is(slurp($path), "keep me\n", 'existing content survives release');

    my $dir = scratch_dir();
    my $old_umask = umask;

    my $fresh = "$dir/fresh-0640";
    ok(!-e $fresh, 'fresh path does not exist yet');
    umask 022;
    $g = lock_file($fresh, LOCK_EX, perms => 0640);
    my $mask = umask;
    umask $old_umask;
    ok($g, 'lock_file creates a missing file by default') or diag("\$! = $!");
    ok(-f $fresh, 'the file exists');
    is(sprintf('%04o', (stat $fresh)[2] & 07777), sprintf('%04o', 0640 & ~$mask),
        'perms => 0640 under umask 022');
    undef $g;

    my $fresh2 = "$dir/fresh-default";
    umask 027;
    $g = lock_file($fresh2, LOCK_EX);
    $mask = umask;
    umask $old_umask;
    is(sprintf('%04o', (stat $fresh2)[2] & 07777), sprintf('%04o', 0666 & ~$mask),
        'default perms 0666, less the umask (027)');
    undef $g;

    my $missing = "$dir/missing";
    refused_ok(try_lock_file($missing, LOCK_EX, create => 0), ENOENT, 'create => 0 on a missing file');
    ok(!-e $missing, 'create => 0 does not create the file');

    my $target = scratch_file();
    my $link = "$dir/link-to-target";
    symlink($target, $link) or die "symlink: $!";
    refused_ok(try_lock_file($link, LOCK_EX), ELOOP, 'a symlink at PATH');
    is(probe($target, LOCK_EX), 1, 'the refused symlink left the target unlocked');
    $g = lock_file($link, LOCK_EX, follow_symlinks => 1);
    ok($g, 'follow_symlinks => 1 locks through the symlink') or diag("\$! = $!");
    is(probe($target, LOCK_EX), 0, 'follow_symlinks => 1: the target is locked');
    ok(-l $link, 'the symlink is still a symlink');
    undef $g;
    is(probe($target, LOCK_EX), 1, 'follow_symlinks => 1: released');

    my $subdir = "$dir/a-directory";
    mkdir $subdir or die "mkdir $subdir: $!";
    {
        my ($dg, $errno) = try_lock_file($subdir, LOCK_EX);
        ok($dg, 'a directory can be locked (default options)')
          or diag('$! = ' . POSIX::strerror($errno));
        is($dg ? probe($subdir, LOCK_EX) : 1, 0, 'another process sees the directory busy');
    }
    $g = lock_file($subdir, LOCK_EX, create => 0);
    ok($g, 'a directory can be locked with create => 0') or diag("\$! = $!");
    is(probe($subdir, LOCK_EX), 0, 'create => 0: another process sees the directory busy');
    undef $g;
    is(probe($subdir, LOCK_EX), 1, 'directory lock released');
};

subtest 'read-only fallback for an unprivileged user' => sub {
    plan skip_all => 'needs root to switch to an unprivileged user' unless $> == 0;
    my ($uid, $gid) = (getpwnam 'nobody')[2, 3];
    plan skip_all => "no user 'nobody'" unless defined $uid && $uid != 0;

    chmod 0755, scratch_dir() or die "chmod: $!";
    my $path = scratch_file('owned-by-root');
    spew($path, "root's content\n");
    chown 0, 0, $path or die "chown: $!";
    chmod 0644, $path or die "chmod: $!";

    my $peer = spawn(sub {
        my ($parent) = @_;
        $) = "$gid $gid";
        $( = $gid;
        POSIX::setgid($gid) or die "setgid: $!";
        POSIX::setuid($uid) or die "setuid: $!";
        die "still privileged\n" unless $> == $uid && $< == $uid;
        $parent->say(open(my $rw, '+<', $path) ? 'read-write' : 'refused ' . ($! + 0));
        my $g = lock_file($path, LOCK_EX);
        unless ($g) { $parent->say('failed ' . ($! + 0)); return }
        $parent->say('locked');
        my $fh = $g->fh;
        my $line = $fh ? readline($fh) : undef;
        chomp $line if defined $line;
        $parent->say('read ' . ($line // '(nothing)'));
        $parent->expect('release');
        $g->release;
        $parent->say('released');
    });
    is($peer->hear, 'refused ' . EACCES, 'the unprivileged user cannot open the file read-write');
    my $word = $peer->hear // 'end of file';
    is($word, 'locked', 'lock_file(PATH, LOCK_EX) succeeds with a read-only descriptor');
    if ($word eq 'locked') {
        is($peer->hear, "read root's content", 'the guard fh is readable');
        is(probe($path, LOCK_EX), 0, "root's probe sees the unprivileged lock busy");
        $peer->say('release');
        is($peer->hear, 'released', 'the unprivileged holder released');
        is(probe($path, LOCK_EX), 1, 'free again');
    }
    is($peer->wait, 0, 'the unprivileged child exited cleanly');
};

subtest 'fh of a PATH guard: output flushed at release' => sub {
    my $path = scratch_file();
    my $g = lock_file($path, LOCK_EX);
    my $fh = $g->fh;
    ok($fh, 'fh returns a handle') or diag("\$! = $!");
    is(refaddr($g->fh), refaddr($fh), 'fh returns the same handle on each call');
    print {$fh} "written under the lock\n";
    $g->release;
    is(slurp($path), "written under the lock\n", 'another handle reads the data after release');
};

subtest 'unlink => 1' => sub {
    my $path = scratch_file();
    my $g = lock_file($path, LOCK_EX, unlink => 1);
    ok(-e $path, 'the file exists while held');
    is(probe($path, LOCK_EX), 0, 'and is locked');
    $g->release;
    ok(!-e $path, 'the file is removed at release');

    $path = scratch_file();
    $g = lock_file($path, LOCK_EX, unlink => 1);
    spew("$path.new", "replacement\n");
    rename "$path.new", $path or die "rename: $!";
    $g->release;
    ok(-e $path, 'a file renamed over PATH before release is not removed');
    is(-e $path ? slurp($path) : undef, "replacement\n", 'and it is the replacement');

    $path = scratch_file();
    $g = lock_file($path, LOCK_SH, unlink => 1);
    $g->release;
    ok(!-e $path, 'LOCK_SH without another holder: removed at release');

    $path = scratch_file();
    $g = lock_file($path, LOCK_SH, unlink => 1);
    my $other = holder($path, LOCK_SH);
    $g->release;
    ok(-e $path, 'LOCK_SH with another SH holder: not removed at release');
    is(probe($path, LOCK_EX), 0, "the other holder's shared lock is undisturbed");
    is(probe($path, LOCK_SH), 1, 'and it is only shared');
    is(release_holder($other), 'released', 'other holder released');
    is(probe($path, LOCK_EX), 1, 'nothing is held after both released');
};

subtest 'lock outcomes: busy, timed out, granted after a wait' => sub {
    my $path = scratch_file();
    my $h = holder($path, LOCK_EX);

    refused_ok(try_lock_file($path, LOCK_EX | LOCK_NB), EWOULDBLOCK, 'LOCK_EX|LOCK_NB against a holder');
    refused_ok(try_lock_file($path, LOCK_SH | LOCK_NB), EWOULDBLOCK, 'LOCK_SH|LOCK_NB against a holder');
    refused_ok(try_lock_file($path, LOCK_EX, timeout => 0), EWOULDBLOCK, 'timeout => 0 against a holder');

    my $t0 = now();
    my ($g, $errno) = try_lock_file($path, LOCK_EX, timeout => 0.2);
    my $elapsed = now() - $t0;
    refused_ok($g, $errno, ETIMEDOUT, 'timeout => 0.2 against a holder');
    cmp_ok($elapsed, '>=', 0.2, 'not before the timeout');
    cmp_ok($elapsed, '<', 10, 'and not long after');
    is(release_holder($h), 'released', 'holder released');

    $h = release_on_waiter($path);
    $h->say($$);
    $t0 = now();
    ($g, $errno) = try_lock_file($path, LOCK_EX, timeout => 30);
    $elapsed = now() - $t0;
    ok($g, 'a waiter with timeout 30 gets the lock when the holder releases')
      or diag('$! = ' . POSIX::strerror($errno));
    cmp_ok($elapsed, '<', 30, 'before its deadline');
    is($h->hear, 'released', 'the holder released while we waited');
    $h->wait;
    ok($g && $g->is_locked, 'the waiter holds the lock');
    is(probe($path, LOCK_SH), 0, 'another process sees it busy');
    undef $g;
};

subtest 'programmer errors croak naming the function and argument' => sub {
    my $path = scratch_file();
    my %bad_mode = (
        '0'               => 0,
        'LOCK_UN'         => LOCK_UN,
        'LOCK_NB alone'   => LOCK_NB,
        'LOCK_SH|LOCK_EX' => LOCK_SH | LOCK_EX,
        "'abc'"           => 'abc',
        'undef'           => undef,
    );
    for my $name (sort keys %bad_mode) {
        my $got = eval { lock_file($path, $bad_mode{$name}) };
        like($@, qr/^lock_file: .*MODE/, "MODE $name croaks");
        ok(!defined $got, "MODE $name: nothing returned");
    }

    eval { lock_file($path, LOCK_EX, bogus => 1) };
    like($@, qr/^lock_file: .*unknown option .*bogus/, 'unknown option croaks naming it');
    eval { lock_file($path, LOCK_EX, 'timeout') };
    like($@, qr/^lock_file: .*odd number of option/, 'odd option list croaks');

    my $nan = 9**9**9 / 9**9**9;
    for my $case ([-1, '-1'], ['abc', "'abc'"], [$nan, 'NaN']) {
        eval { lock_file($path, LOCK_EX, timeout => $case->[0]) };
        like($@, qr/^lock_file: .*timeout/, "timeout $case->[1] croaks");
    }
    eval { lock_file($path, LOCK_EX, perms => 'abc') };
    like($@, qr/^lock_file: .*perms/, "perms 'abc' croaks");

    eval { lock_file(undef, LOCK_EX) };
    like($@, qr/^lock_file: .*PATH/, 'undef PATH croaks');
    eval { lock_file('', LOCK_EX) };
    like($@, qr/^lock_file: .*PATH/, 'empty PATH croaks');
    eval { lock_file({}, LOCK_EX) };
    like($@, qr/^lock_file: .*PATH or FH.*HASH/, 'a hash ref croaks');

    my $fh = open_lock($path);
    for my $opt ([unlink => 1], [create => 1], [perms => 0600], [follow_symlinks => 1]) {
        my $got = eval { lock_file($fh, LOCK_EX, @$opt) };
        like($@, qr/^lock_file: .*\b$opt->[0]\b.*PATH/, "$opt->[0] with a FH croaks");
        ok(!defined $got, "$opt->[0] with a FH: nothing returned");
    }
    is(probe($path, LOCK_EX), 1, 'no croak left a lock behind');
    close $fh;
};

subtest 'guard methods with a wrong invocant' => sub {
    my @invocants = (
        ['a string',            'File::Locker::Guard'],
        ['an unblessed ref',    {}],
        ["another class's object", bless({}, 'Some::Other::Class')],
    );
    for my $method (qw(release is_locked mode upgrade downgrade fh path offset length)) {
        my $code = $GUARD->can($method) or die "no method $method";
        for my $inv (@invocants) {
            eval { $code->($inv->[1]) };
            like($@, qr/^\Q$GUARD\E::\Q$method\E: .*\Q$GUARD\E/, "$method on $inv->[0] croaks");
        }
    }

    my $g = lock_file(scratch_file(), LOCK_EX);
    $g->release;
    eval { $g->upgrade };
    like($@, qr/^\Q$GUARD\E::upgrade: .*released/, 'upgrade after release croaks');
    eval { $g->downgrade };
    like($@, qr/^\Q$GUARD\E::downgrade: .*released/, 'downgrade after release croaks');
};

subtest 'upgrade and downgrade' => sub {
    my $path = scratch_file();
    my $g = lock_file($path, LOCK_SH);
    my $other = holder($path, LOCK_SH);

    local $!;
    $! = 0;
    my $ok = $g->upgrade(timeout => 0);
    my $errno = $! + 0;
    ok(!$ok, 'upgrade(timeout => 0) against another SH holder fails');
    is($errno, EWOULDBLOCK, '$! is EWOULDBLOCK');
    ok($g->is_locked, 'the guard took its shared lock back: is_locked');
    is($g->mode, LOCK_SH, 'mode is LOCK_SH');
    is(release_holder($other), 'released', 'other holder released');
    is(probe($path, LOCK_EX), 0, 'the shared lock really is held again');
    is(probe($path, LOCK_SH), 1, 'and it is shared');

    ok($g->upgrade, 'upgrade without contention returns true');
    is($g->mode, LOCK_EX, 'mode is LOCK_EX');
    ok($g->is_locked, 'is_locked after upgrade');
    is(probe($path, LOCK_SH), 0, 'another process cannot take LOCK_SH');

    ok($g->downgrade, 'downgrade returns true');
    is($g->mode, LOCK_SH, 'mode is LOCK_SH');
    is(probe($path, LOCK_SH), 1, 'another process can take LOCK_SH');
    is(probe($path, LOCK_EX), 0, 'but not LOCK_EX');
    $g->release;
};

subtest 'no descriptor leak' => sub {
    my $path = scratch_file();
    my $busy = scratch_file();
    my $fh = open_lock($path);
    my $h = holder($busy, LOCK_EX);

    my $before = fd_count();
    my $failures = 0;
    for my $i (1 .. 5000) {
        my $g = lock_file($path, LOCK_EX) or do { $failures++; next };
        my $dup;
        $dup = $g->fh if $i % 10 == 0;    # now and then make the fh dup too
        $g->release;
    }
    for (1 .. 5000) {
        my $g = lock_file($fh, LOCK_EX) or $failures++;
    }
    my $refused = 0;
    for my $i (1 .. 200) {
        my ($g, $errno) = try_lock_file($busy, $i % 2 ? LOCK_EX | LOCK_NB : LOCK_SH | LOCK_NB);
        $refused++ if !$g && $errno == EWOULDBLOCK;
    }
    my $after = fd_count();

    is($failures, 0, '10000 uncontended locks granted');
    is($refused, 200, '200 LOCK_NB attempts against a holder refused with EWOULDBLOCK');
    is($after, $before, 'same number of open descriptors before and after');
    is(release_holder($h), 'released', 'holder released');
    close $fh;
};

subtest 'exec\'d commands do not inherit the lock' => sub {
    my $path = scratch_file();
    my $real = realpath($path);
    my $control = scratch_file();
    my $real_control = realpath($control);

    # A descriptor deliberately left open across exec: shows the listing works.
    my $leak = open_lock($control);
    fcntl($leak, F_SETFD, 0) or die "fcntl: $!";

    my $g = lock_file($path, LOCK_EX);
    my $fh = $g->fh;    # the dup made for I/O must not be inherited either
    my @targets = inherited_targets();
    ok((grep { $_ eq $real_control } @targets), 'control: an inheritable descriptor is listed')
      or diag(explain \@targets);
    ok(!(grep { $_ eq $real } @targets), 'a command run by system() has no descriptor of PATH')
      or diag(explain \@targets);
    close $leak;

    # A long-running command started while the lock is held.
    pipe(my $cmd_stdin, my $to_cmd) or die "pipe: $!";
    pipe(my $from_cmd, my $cmd_stdout) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<&', $cmd_stdin or POSIX::_exit(126);
        open STDOUT, '>&', $cmd_stdout or POSIX::_exit(126);
        exec $^X, '-e', <<'END' or POSIX::_exit(127);
$| = 1;
opendir my $dir, '/proc/self/fd' or die "opendir: $!";
for my $n (grep { /^\d+$/ } readdir $dir) {
    my $target = readlink "/proc/self/fd/$n";
    print "fd $target\n" if defined $target;
}
print "ready\n";
my $line = <STDIN>;    # runs until the parent closes the pipe
exit 0;
END
    }
    close $cmd_stdin;
    close $cmd_stdout;
    $to_cmd->autoflush(1);
    my @cmd_targets;
    {
        local $SIG{ALRM} = sub { die "no word from command $pid\n" };
        alarm $LockerTest::PATIENCE;
        while (my $line = <$from_cmd>) {
            chomp $line;
            last if $line eq 'ready';
            push @cmd_targets, $1 if $line =~ /^fd (.*)/;
        }
        alarm 0;
    }
    ok(@cmd_targets, 'the command listed its descriptors');
    ok(!(grep { $_ eq $real } @cmd_targets), 'the long-running command has no descriptor of PATH')
      or diag(explain \@cmd_targets);

    $g->release;
    is(probe($path, LOCK_EX), 1, 'released while the command still runs: the lock is free');
    ok(kill(0, $pid), 'the command was still running');

    close $to_cmd;
    waitpid $pid, 0;
    is($?, 0, 'the command exited cleanly');
    close $from_cmd;
};

done_testing;
