#!perl
# bin/locker, run as an installed command would be, against holders in other
# processes: CORE::flock children, util-linux flock(1), lock_file children and
# File::FcntlLock byte-range holders. Exit statuses (COMMAND's own, the
# conflict code, usage errors, refused symlinks), -c, -n, -w, -s/-x, --range,
# -F, -o and descriptor inheritance, -v reports while waiting, the FD form,
# --holders, --help and the POD.

use strict;
use warnings;

use Test::More;
use Cwd qw(realpath);
use Fcntl qw(:flock SEEK_SET);
use IPC::Open2 qw(open2);
use IPC::Open3 qw(open3);
use POSIX qw(SIGTERM SIGKILL);
use Symbol qw(gensym);
use File::Locker qw(:flock lock_file);
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir spawn probe holder lock_holder now slurp read_line release_on_waiter open_rw);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script
$ENV{SHELL} = '/bin/sh';  # what -c runs

my @LOCKER = ($^X, '-Mblib', 'bin/locker');
my $FLOCK1 = -x '/usr/bin/flock' ? '/usr/bin/flock' : undef;
my $HAVE_FCNTLLOCK = eval { require File::FcntlLock; 1 };

# Runs ARGV to completion with stdin from /dev/null and stdout and stderr in
# files; returns { code, signal, out, err, elapsed }.
sub run_cmd {
    my @argv = @_;
    my ($out, $err) = (scratch_file(), scratch_file());
    my $t0  = now();
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN,  '<', '/dev/null' or POSIX::_exit(120);
        open STDOUT, '>', $out        or POSIX::_exit(121);
        open STDERR, '>', $err        or POSIX::_exit(122);
        { no warnings 'exec'; exec { $argv[0] } @argv }
        POSIX::_exit(123);
    }
    waitpid $pid, 0;
    my $status = $?;
    return { code => $status >> 8, signal => $status & 127, out => slurp($out),
             err => slurp($err), elapsed => now() - $t0 };
}

sub run_locker { run_cmd(@LOCKER, @_) }

# Checks a run_locker result's exit code; shows its stderr when it is wrong.
sub exits_ok {
    my ($r, $want, $what) = @_;
    is($r->{signal}, 0, "$what: not killed by a signal");
    is($r->{code}, $want, "$what: exits $want") or diag("stderr: $r->{err}");
}

# Starts ARGV with its stdin, stdout and stderr on pipes.
sub start {
    my @argv = @_;
    my $err = gensym;
    my $pid = open3(my $in, my $out, $err, @argv);
    $in->autoflush(1);
    return { pid => $pid, in => $in, out => $out, err => $err, t0 => now() };
}

# Ends a started process: a line on its stdin, then end of file; returns
# { code, signal, out, err } with what was left on its pipes.
sub finish {
    my ($proc) = @_;
    print { $proc->{in} } "go\n";
    close $proc->{in};
    my $out = do { local $/; read_line($proc->{out}) } // '';
    my $err = do { local $/; read_line($proc->{err}) } // '';
    waitpid $proc->{pid}, 0;
    my $status = $?;
    return { code => $status >> 8, signal => $status & 127, out => $out, err => $err,
             elapsed => now() - $proc->{t0} };
}

# Releases a LockerTest::holder (or a child that speaks the same words).
sub release_ok {
    my ($peer, $what) = @_;
    $peer->say('release');
    is($peer->hear, 'released', "$what released");
    is($peer->wait, 0, "$what exited cleanly");
}

# A child holding lock_file(PATH, MODE) until told "release".
sub lock_file_holder {
    my ($path, $mode) = @_;
    return lock_holder(sub {
        my $guard = lock_file($path, $mode) or die "lock_file: $!";
        return sub { $guard->release };
    });
}

# A util-linux flock(1) holder: flock -x PATH sh -c 'echo locked; read x'.
sub flock1_holder {
    my ($path) = @_;
    my $pid = open2(my $out, my $in, $FLOCK1, '-x', $path, 'sh', '-c', 'echo locked; read x');
    $in->autoflush(1);
    my $word = read_line($out);
    die "flock(1) holder said '" . ($word // 'nothing') . "'\n" unless ($word // '') eq 'locked';
    return { pid => $pid, in => $in, out => $out };
}

sub flock1_release {
    my ($h) = @_;
    print { $h->{in} } "\n";
    close $h->{in};
    waitpid $h->{pid}, 0;
    is($?, 0, 'flock(1) holder exited cleanly');
    close $h->{out};
}

# A File::FcntlLock F_WRLCK holder on [OFFSET, OFFSET+LENGTH) of PATH.
sub fcntl_holder {
    my ($path, $offset, $length) = @_;
    return lock_holder(sub {
        my $fh = open_rw($path);
        my $fs = File::FcntlLock->new(l_type => File::FcntlLock::F_WRLCK(), l_whence => SEEK_SET,
                                      l_start => $offset, l_len => $length);
        $fs->lock($fh, File::FcntlLock::F_SETLK()) or die "F_SETLK: " . $fs->error;
        return sub { close $fh };
    });
}

# A COMMAND that creates MARKER, to tell whether it ran.
sub touch { my ($marker) = @_; return ('sh', '-c', ': > "$0"', $marker) }

# A perl COMMAND printing the target of each of its open descriptors.
my $FD_LISTER = <<'END';
opendir my $dir, '/proc/self/fd' or die "opendir: $!";
for my $n (grep { /^\d+$/ } readdir $dir) {
    my $target = readlink "/proc/self/fd/$n";
    print "$target\n" if defined $target;
}
END

subtest 'free lock: COMMAND runs, its status is the exit status' => sub {
    my $path   = scratch_dir() . '/created-by-locker';
    my $marker = scratch_dir() . '/free-ran';
    my $r = run_locker($path, touch($marker));
    exits_ok($r, 0, 'free lock');
    ok(-e $marker, 'COMMAND ran');
    ok(-e $path, 'a missing LOCKFILE is created');
    is(probe($path, LOCK_EX), 1, 'the lock is released when locker exits');

    exits_ok(run_locker($path, 'sh', '-c', 'exit 7'), 7, 'COMMAND exiting 7');
    exits_ok(run_locker($path, 'sh', '-c', 'exit 0'), 0, 'COMMAND exiting 0');
    for my $sig (SIGTERM, SIGKILL) {
        exits_ok(run_locker($path, 'sh', '-c', "kill -$sig \$\$"), 128 + $sig,
                 "COMMAND killed by signal $sig");
    }
    my $r2 = run_locker($path, 'sh', '-c', 'printf "[%s]" "$@"', 'sh', 'a b', '', '-n');
    exits_ok($r2, 0, 'COMMAND with arguments');
    is($r2->{out}, '[a b][][-n]', 'ARGs are passed to COMMAND unchanged');
};

subtest '-c SHELL COMMAND after LOCKFILE' => sub {
    my $path   = scratch_file();
    my $marker = scratch_dir() . '/c-ran';
    my $r = run_locker($path, '-c', "echo shell > '$marker'; exit 3");
    exits_ok($r, 3, '-c');
    ok(-e $marker && slurp($marker) eq "shell\n", 'the shell ran the command');
    $r = run_locker($path, '--command=exit 4');
    exits_ok($r, 4, '--command=CMD after LOCKFILE');
    $r = run_locker('-c', 'exit 5', $path);
    exits_ok($r, 5, '-c CMD before LOCKFILE');
};

subtest 'conflicts with a CORE::flock holder' => sub {
    my $path   = scratch_file();
    my $marker = scratch_dir() . '/conflict-ran';
    my $peer   = holder($path, LOCK_EX);

    my $r = run_locker('-n', $path, touch($marker));
    exits_ok($r, 1, '-n against a holder');
    ok(!-e $marker, '-n: COMMAND did not run');

    $r = run_locker('-n', '-E', 42, $path, touch($marker));
    exits_ok($r, 42, '-n -E 42');
    ok(!-e $marker, '-n -E 42: COMMAND did not run');

    $r = run_locker('-w', '0', $path, touch($marker));
    exits_ok($r, 1, '-w 0');

    $r = run_locker('-w', '0.3', $path, touch($marker));
    exits_ok($r, 1, '-w 0.3 expires');
    cmp_ok($r->{elapsed}, '>=', 0.3, '-w 0.3: waited at least 0.3 s');
    cmp_ok($r->{elapsed}, '<', 10, '-w 0.3: gave up long before 10 s');
    ok(!-e $marker, '-w 0.3: COMMAND did not run');

    $r = run_locker('-w', '0.3', '-E', 9, $path, touch($marker));
    exits_ok($r, 9, '-w 0.3 -E 9');

    $r = run_locker('-s', '-n', $path, touch($marker));
    exits_ok($r, 1, '-s -n against an exclusive holder');
    ok(!-e $marker, 'no COMMAND ran in any conflict');

    release_ok($peer, 'CORE::flock holder');
    $r = run_locker('-n', $path, touch($marker));
    exits_ok($r, 0, '-n once the holder is gone');
    ok(-e $marker, 'COMMAND ran once the holder was gone');
};

SKIP: {
    skip 'util-linux flock(1) is not installed', 1 unless $FLOCK1;
    subtest 'conflicts with a flock(1) holder' => sub {
        my $path   = scratch_file();
        my $marker = scratch_dir() . '/flock1-ran';
        my $h = flock1_holder($path);
        my $r = run_locker('-n', $path, touch($marker));
        exits_ok($r, 1, '-n against flock(1)');
        ok(!-e $marker, 'COMMAND did not run');
        $r = run_locker('-w', '0.3', '-E', 3, $path, touch($marker));
        exits_ok($r, 3, '-w 0.3 -E 3 against flock(1)');
        cmp_ok($r->{elapsed}, '>=', 0.3, 'waited at least 0.3 s');
        flock1_release($h);
        $r = run_locker('-n', $path, touch($marker));
        exits_ok($r, 0, '-n after flock(1) let go');
        ok(-e $marker, 'COMMAND ran');
    };
}

subtest 'conflicts with lock_file holders' => sub {
    my $path   = scratch_file();
    my $marker = scratch_dir() . '/lock-file-ran';
    my $peer = lock_file_holder($path, LOCK_EX);
    exits_ok(run_locker('-n', $path, touch($marker)), 1, '-n against lock_file LOCK_EX');
    exits_ok(run_locker('-s', '-n', $path, touch($marker)), 1, '-s -n against lock_file LOCK_EX');
    ok(!-e $marker, 'COMMAND did not run');
    release_ok($peer, 'lock_file holder');

    $peer = lock_file_holder($path, LOCK_SH);
    exits_ok(run_locker('-s', '-n', $path, touch($marker)), 0, '-s -n beside lock_file LOCK_SH');
    ok(-e $marker, 'shared: COMMAND ran');
    unlink $marker;
    exits_ok(run_locker('-x', '-n', $path, touch($marker)), 1, '-x -n against lock_file LOCK_SH');
    ok(!-e $marker, 'exclusive: COMMAND did not run');
    release_ok($peer, 'lock_file shared holder');
};

subtest '-s beside a shared CORE::flock holder, -x conflicts' => sub {
    my $path   = scratch_file();
    my $marker = scratch_dir() . '/shared-ran';
    my $peer   = holder($path, LOCK_SH);
    exits_ok(run_locker('-s', '-n', $path, touch($marker)), 0, '-s -n');
    ok(-e $marker, '-s: COMMAND ran at once');
    unlink $marker;
    exits_ok(run_locker('--shared', '-n', $path, touch($marker)), 0, '--shared -n');
    ok(-e $marker, '--shared: COMMAND ran at once');
    unlink $marker;
    exits_ok(run_locker('-x', '-n', $path, touch($marker)), 1, '-x -n');
    exits_ok(run_locker('-e', '-n', $path, touch($marker)), 1, '-e -n');
    exits_ok(run_locker('-n', $path, touch($marker)), 1, '-n (exclusive by default)');
    ok(!-e $marker, 'no exclusive COMMAND ran');
    release_ok($peer, 'shared holder');
};

subtest '-w 30: the holder lets go while locker waits' => sub {
    my $path = scratch_file();
    my $peer = release_on_waiter($path);
    my $proc = start(@LOCKER, '-w', '30', $path, 'sh', '-c', 'echo ran');
    $peer->say($proc->{pid});
    is($peer->hear, 'released', 'the holder saw locker wait, then let go');
    is(read_line($proc->{out}), 'ran', 'COMMAND ran after the wait');
    my $r = finish($proc);
    exits_ok($r, 0, '-w 30 granted early');
    cmp_ok($r->{elapsed}, '<', 25, 'long before the 30 s deadline');
    is($peer->wait, 0, 'holder exited cleanly');
};

subtest '-v -w 30: reports the holder, then gets the lock when it goes' => sub {
    my $path = scratch_file();
    my $peer = holder($path, LOCK_EX);
    my $pid  = $peer->pid;
    my $proc = start(@LOCKER, '-v', '-w', '30', $path, 'sh', '-c', 'echo ran');
    my $line = read_line($proc->{err}) // '';
    like($line, qr/waiting for/, 'locker says it waits');
    like($line, qr/\bpid $pid\b/, 'the report names the holder pid');
    release_ok($peer, 'holder');
    my $t0 = now();
    like(read_line($proc->{out}), qr/^locker: getting lock took \d+\.\d{6} seconds$/,
         'says on stdout how long the lock took, as flock(1) does');
    is(read_line($proc->{out}), 'locker: executing sh', 'then names the program it executes');
    is(read_line($proc->{out}), 'ran', 'COMMAND ran once the holder let go');
    cmp_ok(now() - $t0, '<', 10, 'promptly');
    my $r = finish($proc);
    exits_ok($r, 0, '-v -w 30');
};

subtest '-v while waiting names holder pid, flock, exclusive' => sub {
    my $path   = scratch_file();
    my $marker = scratch_dir() . '/verbose-ran';
    my $peer   = holder($path, LOCK_EX);
    my $pid    = $peer->pid;
    my $r = run_locker('-v', '-w', '1.5', $path, touch($marker));
    exits_ok($r, 1, '-v -w 1.5 times out');
    cmp_ok($r->{elapsed}, '>=', 1.5, 'waited at least 1.5 s');
    ok(!-e $marker, 'COMMAND did not run');
    my @lines = grep { /\bpid $pid\b/ && /\bflock\b/ && /\bexclusive\b/ } split /\n/, $r->{err};
    ok(@lines >= 1, 'a stderr line names the holder pid, "flock" and "exclusive"')
      or diag("stderr: $r->{err}");
    release_ok($peer, 'holder');
};

subtest 'the lock is held while COMMAND runs' => sub {
    my $path = scratch_file();
    my $proc = start(@LOCKER, $path, 'sh', '-c', 'echo running; read x');
    is(read_line($proc->{out}), 'running', 'COMMAND is running');
    is(probe($path, LOCK_SH), 0, 'the file is locked meanwhile');
    my $r = finish($proc);
    exits_ok($r, 0, 'COMMAND finished');
    is(probe($path, LOCK_EX), 1, 'released after COMMAND ended');

    $proc = start(@LOCKER, '-s', $path, 'sh', '-c', 'echo running; read x');
    is(read_line($proc->{out}), 'running', '-s: COMMAND is running');
    is(probe($path, LOCK_SH), 1, '-s: another shared lock is granted');
    is(probe($path, LOCK_EX), 0, '-s: an exclusive lock is not');
    exits_ok(finish($proc), 0, '-s: COMMAND finished');
    is(probe($path, LOCK_EX), 1, '-s: released after COMMAND ended');
};

subtest 'COMMAND inherits the lock descriptor, unless -o' => sub {
    my $path = scratch_file();
    my $real = realpath($path);

    my $r = run_locker($path, $^X, '-e', $FD_LISTER);
    exits_ok($r, 0, 'descriptor listing');
    my @targets = split /\n/, $r->{out};
    ok(@targets >= 3, 'COMMAND listed its descriptors') or diag("stdout: $r->{out}");
    ok(grep({ $_ eq $real } @targets), 'the lock file is among them') or diag(explain \@targets);

    $r = run_locker('-o', $path, $^X, '-e', $FD_LISTER);
    exits_ok($r, 0, '-o descriptor listing');
    ok(!grep({ $_ eq $real } split /\n/, $r->{out}), '-o: the lock file is not among them')
      or diag("stdout: $r->{out}");

    $r = run_locker('-F', $path, $^X, '-e', $FD_LISTER);
    exits_ok($r, 0, '-F descriptor listing');
    ok(grep({ $_ eq $real } split /\n/, $r->{out}), '-F: COMMAND has the lock file open')
      or diag("stdout: $r->{out}");

    my $proc = start(@LOCKER, '-F', $path, 'sh', '-c', 'echo running; read x');
    is(read_line($proc->{out}), 'running', '-F: COMMAND is running');
    is(probe($path, LOCK_SH), 0, '-F: COMMAND holds the lock');
    exits_ok(finish($proc), 0, '-F: COMMAND finished');
    is(probe($path, LOCK_EX), 1, '-F: released when COMMAND ended');

    exits_ok(run_locker('-F', $path, 'sh', '-c', 'exit 6'), 6, '-F: exit status is COMMAND\'s');
    exits_ok(run_locker('-F', '-o', $path, 'true'), 64, '-F with -o is refused, as by flock(1)');
};

SKIP: {
    skip 'File::FcntlLock cannot be loaded', 1 unless $HAVE_FCNTLLOCK;
    subtest '--range against a File::FcntlLock holder of byte 5' => sub {
        my $path   = scratch_file();
        my $marker = scratch_dir() . '/range-ran';
        my $peer   = fcntl_holder($path, 5, 1);
        exits_ok(run_locker('--range', '0:10', '-n', $path, touch($marker)), 1, '--range 0:10 -n');
        exits_ok(run_locker('--range', '5:0', '-n', $path, touch($marker)), 1, '--range 5:0 -n (to EOF)');
        exits_ok(run_locker('--range', '0:10', '-s', '-n', $path, touch($marker)), 1,
                 '--range 0:10 -s -n against a write lock');
        ok(!-e $marker, 'COMMAND did not run');
        exits_ok(run_locker('--range', '20:10', '-n', $path, touch($marker)), 0, '--range 20:10 -n');
        ok(-e $marker, 'COMMAND ran on a free range');
        unlink $marker;
        exits_ok(run_locker('--range', '0:5', '-n', $path, touch($marker)), 0,
                 '--range 0:5 -n (ends just before byte 5)');
        ok(-e $marker, 'COMMAND ran on the adjacent range');
        release_ok($peer, 'fcntl holder');
        unlink $marker;
        exits_ok(run_locker('--range', '0:10', '-n', $path, touch($marker)), 0,
                 '--range 0:10 -n once the holder is gone');
        ok(-e $marker, 'COMMAND ran');
    };
}

subtest 'symbolic link LOCKFILE' => sub {
    my $target = scratch_file();
    my $link   = scratch_dir() . '/link-to-lock';
    my $marker = scratch_dir() . '/symlink-ran';
    symlink $target, $link or die "symlink: $!";
    my $r = run_locker($link, touch($marker));
    exits_ok($r, 66, 'a symlink is refused');
    ok(!-e $marker, 'COMMAND did not run');
    like($r->{err}, qr/^locker: /m, 'locker says why');

    $r = run_locker('--follow-symlinks', $link, touch($marker));
    exits_ok($r, 0, '--follow-symlinks');
    ok(-e $marker, 'COMMAND ran');

    my $peer = holder($target, LOCK_EX);
    exits_ok(run_locker('--follow-symlinks', '-n', $link, 'true'), 1,
             '--follow-symlinks locks the target of the link');
    release_ok($peer, 'holder of the target');
};

subtest 'other failures' => sub {
    my $path = scratch_file();
    my $r = run_locker($path, scratch_dir() . '/no-such-command');
    exits_ok($r, 69, 'COMMAND that cannot be executed');
    $r = run_locker(scratch_dir() . '/no-such-dir/lock', 'true');
    exits_ok($r, 66, 'LOCKFILE in a missing directory');
    like($r->{err}, qr/^locker: /m, 'locker says why');
};

subtest 'usage errors exit 64 without running COMMAND' => sub {
    my $path   = scratch_file();
    my $marker = scratch_dir() . '/usage-ran';
    my @cases = (
        ['no arguments'],
        ['LOCKFILE without COMMAND', $path],
        ['-w abc', '-w', 'abc', $path, touch($marker)],
        ['-w -1', '-w', '-1', $path, touch($marker)],
        ['-w 1x', '-w', '1x', $path, touch($marker)],
        ['--range 5', '--range', '5', $path, touch($marker)],
        ['--range a:b', '--range', 'a:b', $path, touch($marker)],
        ['--range -1:5', '--range', '-1:5', $path, touch($marker)],
        ['-E x', '-E', 'x', $path, touch($marker)],
        ['unknown option', '--no-such-option', $path, touch($marker)],
        ['-c without a command', $path, '-c'],
        ['-c with extra arguments', $path, '-c', ": > '$marker'", 'extra'],
    );
    for my $case (@cases) {
        my ($what, @args) = @$case;
        my $r = run_locker(@args);
        exits_ok($r, 64, $what);
        isnt($r->{err}, '', "$what: says so on stderr");
    }
    ok(!-e $marker, 'no COMMAND ran');
    is(run_locker()->{err}, "locker: not enough arguments\nTry 'locker --help' for more information.\n",
       'no arguments: says so, as flock(1)');
};

subtest '--help, --version' => sub {
    for my $opt ('--help', '-h') {
        my $r = run_locker($opt);
        exits_ok($r, 0, $opt);
        like($r->{out}, qr/\AUsage:/, "$opt: usage on stdout");
        like($r->{out}, qr/--range OFFSET:LENGTH/, "$opt: lists the options");
        is($r->{err}, '', "$opt: nothing on stderr");
    }
    my $r = run_locker('--version');
    exits_ok($r, 0, '--version');
    like($r->{out}, qr/\Q$File::Locker::VERSION\E/, '--version prints the version');
};

subtest 'POD' => sub {
    require Pod::Checker;
    my $checker = Pod::Checker->new(-warnings => 2);
    open my $sink, '>', \my $report or die "open: $!";
    $checker->parse_from_file('bin/locker', $sink);
    is($checker->num_errors, 0, 'podchecker: no errors') or diag($report);
    is($checker->num_warnings, 0, 'podchecker: no warnings') or diag($report);

    require Pod::Text;
    my $text = '';
    my $parser = Pod::Text->new;
    $parser->output_string(\$text);
    $parser->parse_file('bin/locker');
    like($text, qr/locker - run a command while holding a file lock/, 'renders NAME');
    for my $section ('SYNOPSIS', 'OPTIONS', 'THE FD FORM', 'EXIT STATUS') {
        like($text, qr/^\Q$section\E$/m, "renders $section");
    }
    ok(!$parser->any_errata_seen, 'pod2text: no errata');
};

# The FD form runs inside a shell that opened descriptor 9 on FILE.
sub fd_script { my ($body) = @_; return ('sh', '-c', "( $body ) 9>\"\$1\"", $^X) }

subtest 'FD form: locker -n 9 inside ( ... ) 9>FILE' => sub {
    my $path = scratch_file();
    my $proc = start(fd_script('"$0" -Mblib bin/locker -n 9 || exit 5; echo locked; read x'), $path);
    is(read_line($proc->{out}), 'locked', 'the shell got the lock');
    is(probe($path, LOCK_SH), 0, 'FILE is locked while the shell runs');

    my $r = run_cmd(fd_script('exec "$0" -Mblib bin/locker -n 9'), $path);
    exits_ok($r, 1, 'a second FD-form -n conflicts');
    $r = run_cmd(fd_script('exec "$0" -Mblib bin/locker -n -E 7 9'), $path);
    exits_ok($r, 7, 'a second FD-form -n -E 7 conflicts');

    $r = finish($proc);
    exits_ok($r, 0, 'the shell finished');
    is(probe($path, LOCK_EX), 1, 'FILE is free once the shell exited');

    $proc = start(fd_script('"$0" -Mblib bin/locker 9 || exit 5; "$0" -Mblib bin/locker -u 9 || exit 6; '
                            . 'echo unlocked; read x'), $path);
    is(read_line($proc->{out}), 'unlocked', 'the shell locked and unlocked descriptor 9');
    is(probe($path, LOCK_EX), 1, '-u 9 released the lock though the shell keeps the descriptor');
    exits_ok(finish($proc), 0, 'the -u shell finished');

    my $peer = holder($path, LOCK_EX);
    $r = run_cmd(fd_script('exec "$0" -Mblib bin/locker -n 9'), $path);
    exits_ok($r, 1, 'FD form -n against a CORE::flock holder');
    release_ok($peer, 'holder');
};

subtest '--holders' => sub {
    my $path = scratch_file();
    my $peer = holder($path, LOCK_EX);
    my $pid  = $peer->pid;
    my $r = run_locker('--holders', $path);
    exits_ok($r, 0, '--holders with a holder');
    like($r->{out}, qr/^\Q$pid\E\s+flock\s+exclusive\s+whole file/m, 'lists the holder');
    release_ok($peer, 'holder');

    $r = run_locker('--holders', $path);
    is($r->{signal}, 0, '--holders on an unlocked file: not killed by a signal');
    is($r->{code}, 0, '--holders on an unlocked file: exits 0') or diag("stderr: $r->{err}");
    unlike($r->{out}, qr/^\d+\s/m, 'no holder listed for an unlocked file');

    $r = run_locker('--holders', scratch_dir() . '/no-such-file');
    exits_ok($r, 66, '--holders on a missing file');
};

done_testing;
