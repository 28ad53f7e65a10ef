#!perl
# lock_holders(PATH | FH): who holds locks on a file right now. Every holder
# is a real process whose pid, lock kind, mode, range and command line the
# test knows: CORE::flock holders (exclusive, and two shared ones), a classic
# POSIX holder (File::FcntlLock), OFD holders (lock_range), an OFD lock shared
# by a process and its forked child, a flock lock that outlived the process
# that took it, and the classic POSIX fallback of lock_range. Plus the empty
# answer, a handle argument, a missing path and programmer errors.

use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock SEEK_SET);
use IPC::Open2 qw(open2);
use POSIX qw(ENOENT);
use File::Locker qw(:flock lock_range lock_holders);
use lib 't/lib';
use LockerTest qw(scratch_file spawn holder);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

my $HAVE_FCNTLLOCK = eval { require File::FcntlLock; 1 };
my $NO_FCNTLLOCK   = 'File::FcntlLock cannot be loaded';
my $OFD            = File::Locker::_using_ofd_locks();
my $NO_OFD         = 'OFD locks are not in use here (old kernel or FILE_LOCKER_NO_OFD)';

# lock_holders on PATH, sorted by pid for stable comparisons.
sub holders_of {
    my ($target) = @_;
    return sort { ($a->{pid} // -1) <=> ($b->{pid} // -1) } lock_holders($target);
}

# Tells a holder child to release, waits for its word and reaps it.
sub release_ok {
    my ($peer, $what) = @_;
    $peer->say('release');
    my $word = $peer->hear;
    is($word, 'released', "$what: released");
    is($peer->wait, 0, "$what: exited cleanly");
}

# A child that names itself NAME-PID in $0, then runs LOCK->($fh) on its own
# handle of PATH (opened with OPEN_MODE), says "locked" and keeps the lock
# until told "release".
sub named_holder {
    my ($path, $open_mode, $name, $lock) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        $0 = "$name-$$";
        open my $fh, $open_mode, $path or die "open $path: $!";
        my $keep = $lock->($fh) or die "lock $path: $!";
        $parent->say('locked');
        $parent->expect('release');
        undef $keep;
        close $fh;
        $parent->say('released');
    });
    $peer->expect('locked');
    return $peer;
}

# Checks one holder entry against the expected fields.
sub holder_is {
    my ($got, $want, $what) = @_;
    return fail("$what: an entry") unless ref $got eq 'HASH';
    is_deeply([sort keys %$got], [sort qw(pid kind mode offset length command)], "$what: fields");
    for my $key (qw(pid kind mode offset length)) {
        is($got->{$key}, $want->{$key}, "$what: $key");
    }
    like($got->{command} // '', $want->{command}, "$what: command line") if $want->{command};
}

subtest 'unlocked file: empty list' => sub {
    my $path = scratch_file();
    my @holders = lock_holders($path);
    is(scalar @holders, 0, 'no holders') or diag explain \@holders;
    open my $fh, '<', $path or die "open $path: $!";
    @holders = lock_holders($fh);
    is(scalar @holders, 0, 'no holders through a handle') or diag explain \@holders;
};

subtest 'CORE::flock exclusive holder' => sub {
    my $path = scratch_file();
    my $name = "holder-for-test-$$";
    my $peer = named_holder($path, '<', $name, sub { CORE::flock($_[0], LOCK_EX) });
    my $pid  = $peer->pid;
    my $want = { pid => $pid, kind => 'flock', mode => LOCK_EX, offset => 0, length => 0,
                 command => qr/\Q$name-$pid\E/ };

    my @holders = holders_of($path);
    is(scalar @holders, 1, 'one holder by PATH') or diag explain \@holders;
    holder_is($holders[0], $want, 'by PATH');

    open my $fh, '<', $path or die "open $path: $!";
    @holders = holders_of($fh);
    is(scalar @holders, 1, 'one holder by glob ref') or diag explain \@holders;
    holder_is($holders[0], $want, 'by glob ref');

    @holders = holders_of(*$fh{IO});
    is(scalar @holders, 1, 'one holder by IO object') or diag explain \@holders;
    holder_is($holders[0], $want, 'by IO object');
    close $fh;

    release_ok($peer, 'holder');
    is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
};

subtest 'two CORE::flock shared holders' => sub {
    my $path = scratch_file();
    my @peers = map { holder($path, LOCK_SH) } 1 .. 2;
    my @pids  = sort { $a <=> $b } map { $_->pid } @peers;

    my @holders = holders_of($path);
    is(scalar @holders, 2, 'two entries') or diag explain \@holders;
    is_deeply([map { $_->{pid} } @holders], \@pids, 'both pids');
    for my $h (@holders) {
        is($h->{kind}, 'flock', "pid $h->{pid}: kind flock");
        is($h->{mode}, LOCK_SH, "pid $h->{pid}: mode LOCK_SH");
        is($h->{offset}, 0, "pid $h->{pid}: offset 0");
        is($h->{length}, 0, "pid $h->{pid}: length 0");
    }

    for my $peer (@peers) {
        $peer->say('release');
        is($peer->hear, 'released', 'shared holder released');
        is($peer->wait, 0, 'shared holder exited cleanly');
    }
    is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
};

SKIP: {
    skip $NO_FCNTLLOCK, 1 unless $HAVE_FCNTLLOCK;
    subtest 'classic POSIX write lock on [10,20)' => sub {
        my $path = scratch_file();
        my $name = "posix-holder-$$";
        my $peer = named_holder($path, '+<', $name, sub {
            my ($fh) = @_;
            my $fs = File::FcntlLock->new(l_type => File::FcntlLock::F_WRLCK(),
                l_whence => SEEK_SET, l_start => 10, l_len => 10);
            return $fs->lock($fh, File::FcntlLock::F_SETLK()) ? $fs : undef;
        });
        my $pid = $peer->pid;

        my @holders = holders_of($path);
        is(scalar @holders, 1, 'one holder') or diag explain \@holders;
        holder_is($holders[0], { pid => $pid, kind => 'posix', mode => LOCK_EX, offset => 10,
                                 length => 10, command => qr/\Q$name-$pid\E/ }, 'POSIX holder');

        release_ok($peer, 'POSIX holder');
        is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
    };
}

SKIP: {
    skip $NO_OFD, 2 unless $OFD;

    subtest 'OFD shared lock from byte 100 to EOF' => sub {
        my $path = scratch_file();
        my $name = "ofd-holder-$$";
        my $peer = named_holder($path, '<', $name, sub { lock_range($_[0], LOCK_SH, 100, 0) });
        my $pid  = $peer->pid;

        my @holders = holders_of($path);
        is(scalar @holders, 1, 'one holder') or diag explain \@holders;
        holder_is($holders[0], { pid => $pid, kind => 'ofd', mode => LOCK_SH, offset => 100,
                                 length => 0, command => qr/\Q$name-$pid\E/ },
                  'OFD holder resolved to its process');

        release_ok($peer, 'OFD holder');
        is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
    };

    subtest 'OFD lock on a description shared with a forked child' => sub {
        my $path = scratch_file();
        my $peer = spawn(sub {
            my ($parent) = @_;
            open my $fh, '+<', $path or die "open $path: $!";
            my $guard = lock_range($fh, LOCK_EX, 0, 50) or die "lock_range: $!";
            pipe(my $hold_r, my $hold_w) or die "pipe: $!";
            my $kid = fork // die "fork: $!";
            if ($kid == 0) {
                close $hold_w;
                readline $hold_r;    # keeps the inherited descriptor until EOF
                POSIX::_exit(0);
            }
            close $hold_r;
            $parent->say("locked $kid");
            $parent->expect('release');
            close $hold_w;
            waitpid $kid, 0;
            undef $guard;
            close $fh;
            $parent->say('released');
        });
        my ($kid) = ($peer->hear // '') =~ /\Alocked (\d+)\z/;
        ok($kid, 'child and grandchild share the locked description')
          or return $peer->wait;

        my @holders = holders_of($path);
        is_deeply([map { $_->{pid} } @holders], [sort { $a <=> $b } $peer->pid, $kid],
                  'both processes sharing the description are named')
          or diag explain \@holders;
        for my $h (@holders) {
            is_deeply([@$h{qw(kind mode offset length)}], ['ofd', LOCK_EX, 0, 50],
                      "pid $h->{pid}: ofd LOCK_EX 0+50");
        }

        release_ok($peer, 'OFD holder and its child');
        is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
    };
}

subtest 'flock lock outliving the process that took it' => sub {
    my $path = scratch_file();
    my $peer = spawn(sub {
        my ($parent) = @_;
        $0 = "taker-$$";
        open my $fh, '<', $path or die "open $path: $!";
        CORE::flock($fh, LOCK_EX) or die "flock: $!";
        my $kid = fork // die "fork: $!";
        if ($kid == 0) {
            $0 = "survivor-$$";
            $parent->expect('release');
            close $fh;
            $parent->say('released');
            POSIX::_exit(0);
        }
        $parent->say("locked $kid");    # and the taker exits, keeping nothing
    });
    my $taker = $peer->pid;
    my ($survivor) = ($peer->hear // '') =~ /\Alocked (\d+)\z/;
    ok($survivor, 'the taker forked a survivor') or return $peer->wait;
    is(waitpid($taker, 0), $taker, 'the taker has exited');

    my @holders = holders_of($path);
    is(scalar @holders, 1, 'one holder') or diag explain \@holders;
    holder_is($holders[0], { pid => $survivor, kind => 'flock', mode => LOCK_EX, offset => 0,
                             length => 0, command => qr/\Qsurvivor-$survivor\E/ },
              'the surviving descriptor holder is named');
    ok(!grep({ ($_->{pid} // 0) == $taker } @holders), 'the dead taker is not named');

    $peer->say('release');
    is($peer->hear, 'released', 'survivor released');
    is($peer->hear, undef, 'survivor exited');
    close $peer->{out};
    is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
};

subtest 'lock_range in the classic POSIX fallback' => sub {
    my $path = scratch_file();
    my ($out, $in);
    my $pid = do {
        local $ENV{FILE_LOCKER_NO_OFD} = 1;
        open2($out, $in, $^X, '-Mblib', '-MFile::Locker=:flock,lock_range', '-e', <<'CHILD', $path);
open my $fh, '<', $ARGV[0] or die "open: $!";
my $guard = lock_range($fh, LOCK_SH, 100, 0) or die "lock_range: $!";
$| = 1;
print File::Locker::_using_ofd_locks() ? "locked ofd\n" : "locked classic\n";
readline STDIN;
CHILD
    };
    my $word = readline $out;
    chomp $word if defined $word;
    is($word, 'locked classic', 'the child runs with the fallback');

    my @holders = holders_of($path);
    is(scalar @holders, 1, 'one holder') or diag explain \@holders;
    holder_is($holders[0], { pid => $pid, kind => 'posix', mode => LOCK_SH, offset => 100,
                             length => 0, command => qr/-Mblib/ }, 'fallback holder');

    print {$in} "release\n";
    close $in;
    waitpid $pid, 0;
    is($?, 0, 'fallback child exited cleanly');
    close $out;
    is(scalar(my @after = lock_holders($path)), 0, 'no holders after release');
};

subtest 'missing path and programmer errors' => sub {
    my $missing = LockerTest::scratch_dir() . '/no-such-file';
    local $! = 0;
    my @holders = lock_holders($missing);
    my $errno = $! + 0;
    is(scalar @holders, 0, 'missing path: empty list');
    is($errno, ENOENT, 'missing path: $! is ENOENT');

    for my $case (['undef', undef], ['array ref', []], ['hash ref', {}], ['code ref', sub { 1 }],
                  ['empty string', '']) {
        my ($what, $arg) = @$case;
        my $ok = eval { lock_holders($arg); 1 };
        ok(!$ok, "$what: croaks");
        like($@, qr/\Alock_holders: /, "$what: the message names lock_holders");
    }
};

subtest 'documented' => sub {
    my $module = $INC{'File/Locker.pm'};
    open my $fh, '<', $module or die "open $module: $!";
    my $source = do { local $/; readline $fh };
    ok($source =~ /^=head2\s+lock_holders\b/m, 'File::Locker POD documents lock_holders');
};

done_testing;
