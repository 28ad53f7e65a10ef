package LockerTest;

# Helpers for tests that need real processes: a child runs a code block and
# talks to the parent over a pair of pipes, one line at a time. Lines are the
# only synchronisation; nothing sleeps. hear() carries an alarm as a safety
# net so a broken child fails the test instead of hanging it.

use strict;
use warnings;
use Exporter 'import';
use Fcntl qw(:flock O_RDONLY O_WRONLY O_CREAT);
use File::Temp ();
use IO::Handle;
use POSIX ();

our @EXPORT_OK = qw(scratch_dir scratch_file spawn probe holder fd_count);

our $PATIENCE = $ENV{LOCKER_TEST_PATIENCE} || 60;    # seconds, safety net only

my $dir;
sub scratch_dir { $dir //= File::Temp::tempdir('locker-test-XXXXXX', TMPDIR => 1, CLEANUP => 1) }

my $serial = 0;
sub scratch_file {
    my ($name) = @_;
    my $path = scratch_dir() . '/' . ($name // 'lock' . ++$serial);
    open my $fh, '>>', $path or die "create $path: $!";
    close $fh;
    return $path;
}

# spawn(CODE) forks; CODE runs in the child with a LockerTest::Peer for the
# parent and the child exits 0 when CODE returns (255 if it dies). The parent
# gets a LockerTest::Peer for the child.
sub spawn {
    my ($code) = @_;
    pipe(my $to_child_r, my $to_child_w) or die "pipe: $!";
    pipe(my $to_parent_r, my $to_parent_w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $to_child_w;
        close $to_parent_r;
        my $peer = LockerTest::Peer->new($to_child_r, $to_parent_w, getppid);
        my $ok = eval { $code->($peer); 1 };
        print STDERR "child $$ died: $@" unless $ok;
        POSIX::_exit($ok ? 0 : 255);
    }
    close $to_child_r;
    close $to_parent_w;
    return LockerTest::Peer->new($to_parent_r, $to_child_w, $pid);
}

# holder(PATH, MODE) starts a child that takes CORE::flock(MODE) on its own
# handle of PATH, says "locked" (or "failed ERRNO") and releases when told
# "release"; returns its peer once the lock is held.
sub holder {
    my ($path, $mode) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        if (flock $fh, $mode) { $parent->say('locked') } else { $parent->say('failed ' . ($! + 0)); return }
        $parent->expect('release');
        flock $fh, LOCK_UN;
        close $fh;
        $parent->say('released');
    });
    $peer->expect('locked');
    return $peer;
}

# probe(PATH, MODE) asks a fresh process whether MODE|LOCK_NB on its own open
# of PATH would be granted right now: 1 granted, 0 busy (EWOULDBLOCK).
sub probe {
    my ($path, $mode) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '<', $path or die "open $path: $!";
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
    my $line;
    {
        local $SIG{ALRM} = sub { die "no word from peer $self->{pid} in $LockerTest::PATIENCE s\n" };
        my $left = alarm $LockerTest::PATIENCE;
        $line = readline $self->{in};
        alarm $left;
    }
    chomp $line if defined $line;
    return $line;
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
