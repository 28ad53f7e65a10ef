package Bench::Handoff;

# Hand-off latency: two processes take turns on one lock. The waiter tells
# the holder it is about to lock; the holder waits until the waiter is
# really waiting, reads the clock, unlocks and sends that time over a pipe;
# the waiter reads the clock as soon as its lock call returns. Latency is
# the difference (CLOCK_MONOTONIC is shared by all processes). Then the
# roles swap.
#
# "Really waiting": for locks that block in the kernel, the holder watches
# /proc/locks until the waiter's pid shows as blocked on the file. Polling
# peers cannot be seen waiting; for them the holder keeps the lock for a
# random time past the waiter's first try, as a real holder would.

use strict;
use warnings;

use Exporter 'import';
use Fcntl qw(:flock);
use File::Locker qw(lock_file lock_file_async);
use IO::Handle;
use POSIX ();
use Time::HiRes ();

use Bench::Peers qw(have_peer);
use Bench::Util qw(now);

our @EXPORT_OK = qw(handoff_variants run_handoffs);

# The variants: name, whether the waiter blocks in flock(2), and how to
# open, lock and unlock. lock returns a token that unlock gets back.
sub handoff_variants {
    my $fh_open = sub {
        open(my $fh, '+<', $_[0]) or die "open $_[0]: $!\n";
        return $fh;
    };
    my @v = (
        {   name   => 'CORE::flock',
            kernel => 1,
            open   => $fh_open,
            lock   => sub { CORE::flock($_[0], LOCK_EX) or die "flock: $!\n" },
            unlock => sub { CORE::flock($_[0], LOCK_UN) or die "flock: $!\n" },
        },
        {   name   => 'File::Locker::flock',
            kernel => 1,
            open   => $fh_open,
            lock   => sub { File::Locker::flock($_[0], LOCK_EX) or die "flock: $!\n" },
            unlock => sub { File::Locker::flock($_[0], LOCK_UN) or die "flock: $!\n" },
        },
        {   name   => 'File::Locker::flock, TIMEOUT 10',
            kernel => 1,
            open   => $fh_open,
            lock   => sub { File::Locker::flock($_[0], LOCK_EX, 10) or die "flock: $!\n" },
            unlock => sub { File::Locker::flock($_[0], LOCK_UN) or die "flock: $!\n" },
        },
        {   name   => 'lock_file($fh), timeout 10',
            kernel => 1,
            open   => $fh_open,
            lock   => sub { lock_file($_[0], LOCK_EX, timeout => 10) or die "lock_file: $!\n" },
            unlock => sub { $_[1]->release; undef $_[1] },    # let go as the async variant does
        },
        {   name   => 'lock_file_async($fh), timeout 10',
            kernel => 1,
            open   => $fh_open,
            lock   => sub {
                my $w = lock_file_async($_[0], LOCK_EX, timeout => 10)
                  or die "lock_file_async: $!\n";
                my $bits = '';
                vec($bits, fileno($w->fh), 1) = 1;    # what an event loop waits on
                select(my $readable = $bits, undef, undef, undef) // die "select: $!\n";
                # The hand-off ends when the guard is in hand. Both lock_file
                # variants let go of what they hold right after the release
                # (unlock), outside the measured intervals.
                my $g = $w->guard // die "lock_file_async: $!\n";
                return [ $g, $w ];
            },
            unlock => sub { $_[1][0]->release; undef $_[1] },
        },
    );
    if (have_peer('File::Flock::Retry')) {
        push @v, {
            name   => 'File::Flock::Retry, retries 10',
            kernel => 0,
            open   => sub { $_[0] },
            lock   => sub { File::Flock::Retry->lock($_[0], { retries => 10 }) },
            unlock => sub { $_[1]->release },
        };
    }
    if (have_peer('LockFile::Simple')) {
        my $locker = LockFile::Simple->make(-delay => 1, -max => 10, -hold => 0,
            -wfunc => undef, -efunc => undef);
        push @v, {
            name   => 'LockFile::Simple, delay 1 max 10',
            kernel => 0,
            open   => sub { $_[0] },
            lock   => sub { $locker->lock($_[0]) or die "LockFile::Simple: lock failed\n" },
            unlock => sub { $locker->unlock($_[0]) },
        };
    }
    return @v;
}

# True once PID shows in /proc/locks as blocked on a flock of inode INO.
sub _blocked_in_flock {
    my ($pid, $ino) = @_;
    open(my $fh, '<', '/proc/locks') or die "open /proc/locks: $!\n";
    while (my $line = <$fh>) {
        return 1 if $line =~ /^\d+: -> FLOCK\s+\S+\s+\S+\s+$pid\s+[0-9a-f]+:[0-9a-f]+:$ino\s/;
    }
    return 0;
}

sub _wait_for_waiter {
    my ($variant, $peer, $ino) = @_;
    unless ($variant->{kernel}) {
        Time::HiRes::sleep(0.01 + rand(1.0));
        return;
    }
    unless (-r '/proc/locks') {           # no way to look: give it time
        Time::HiRes::sleep(0.002);
        return;
    }
    my $deadline = now() + 10;
    until (_blocked_in_flock($peer, $ino)) {
        die "hand-off: peer $peer never blocked on the lock\n" if now() > $deadline;
    }
}

# One side of the ping-pong; returns the latencies of its own acquisitions.
# The side with FIRST set holds the lock for hand-off 1, then roles swap.
# The holder waits for "got it" before it locks again: flock(2) does not
# queue waiters, so a holder that re-locked at once could take the lock
# back before the woken waiter ran.
sub _play {
    my (%a) = @_;
    my ($v, $path, $in, $out, $peer, $n) = @a{qw(variant path in out peer count)};
    my $ino   = (stat $path)[1];
    my $state = $v->{open}->($path);
    my $send  = sub { print {$out} "@_\n" or die "pipe: $!\n" };
    my $recv  = sub {
        my ($want) = @_;
        my $line = <$in> // die "hand-off: peer went away\n";
        my ($tag, $value) = split ' ', $line;
        die "hand-off: expected '$want', got '$tag'\n" unless $tag eq $want;
        return $value;
    };
    my $first = $a{first} ? 1 : 0;
    my $holds = sub { $_[0] % 2 == $first };    # holder of hand-off K?
    my ($token, @latency);
    if ($first) {
        $token = $v->{lock}->($state);
        $send->('held');
    }
    else {
        $recv->('held');
    }
    for my $k (1 .. $n) {
        if ($holds->($k)) {
            $recv->('waiting');
            _wait_for_waiter($v, $peer, $ino);
            my $t0 = now();
            $v->{unlock}->($state, $token);
            $send->('released', sprintf('%.9f', $t0));
            $recv->('got');
        }
        else {
            $send->('waiting');
            $token = $v->{lock}->($state);
            my $t1 = now();
            push @latency, $t1 - $recv->('released');
            $send->('got');
        }
    }
    $v->{unlock}->($state, $token) unless $holds->($n);    # the last waiter
    return \@latency;
}

# COUNT hand-offs of one variant on PATH between this process and a child;
# returns all their latencies in seconds.
sub run_handoffs {
    my ($variant, $path, $count) = @_;
    pipe(my $to_child_r, my $to_child_w)   or die "pipe: $!\n";
    pipe(my $to_parent_r, my $to_parent_w) or die "pipe: $!\n";
    pipe(my $result_r, my $result_w)       or die "pipe: $!\n";
    $_->autoflush(1) for $to_child_w, $to_parent_w, $result_w;
    my $parent = $$;
    my $pid    = fork // die "fork: $!\n";
    if ($pid == 0) {
        close $_ for $to_child_w, $to_parent_r, $result_r;
        srand();                        # not the parent's random sequence
        my $ok = eval {
            my $lat = _play(variant => $variant, path => $path, in => $to_child_r,
                out => $to_parent_w, peer => $parent, count => $count);
            print {$result_w} join(' ', @$lat), "\n";
            1;
        };
        print STDERR $@ unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    close $_ for $to_child_r, $to_parent_w, $result_w;
    my $mine = eval {
        _play(variant => $variant, path => $path, in => $to_parent_r, out => $to_child_w,
            peer => $pid, count => $count, first => 1);
    };
    my $error = $@;
    close $to_child_w;
    my $theirs = <$result_r>;
    waitpid($pid, 0);
    die $error if $error;
    die "hand-off child failed for $variant->{name}\n" if $? || !defined $theirs;
    return [ @$mine, split ' ', $theirs ];
}

1;
