#!perl
# An exclusive range lock through a PATH needs the file open for writing.
# When the caller cannot open it so, the answer is the open's own error
# (EACCES for another user's read-only file, EROFS on a read-only mount,
# EISDIR for a directory), not the EBADF a read-only fallback descriptor
# would earn from fcntl(2). Shared ranges and whole-file locks still use the
# read-only fallback, which is all they need.
#
# The caller is a child that cannot write the file: root becomes nobody;
# any other user meets a 0444 file, which its owner cannot write either.
# Who holds what is checked by another process through the kernel.
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use POSIX qw(EACCES EISDIR);
use lib 't/lib';
use LockerTest qw(spawn scratch_dir become_other_user);
use File::Locker qw(lock_file lock_range range_conflict);

my $dir = scratch_dir();
chmod 0755, $dir or die "chmod $dir: $!";
my $path = "$dir/read-only.lock";
{ open my $fh, '>', $path or die "create $path: $!" }
chmod 0444, $path or die "chmod $path: $!";

# Runs CODE in a child that cannot write $path; CODE says its words to the
# parent and may wait for "done" while the parent checks the kernel.
sub as_reader {
    my ($code) = @_;
    return spawn(sub {
        my ($parent) = @_;
        become_other_user();
        $code->($parent);
    });
}

sub outcome {
    my ($got) = @_;
    return defined $got ? 'guard' : 'undef ' . ($! + 0);
}

subtest 'lock_range LOCK_EX on a file the caller cannot write: EACCES' => sub {
    for my $options ([], [timeout => 1], [create => 0]) {
        my $peer = as_reader(sub { $_[0]->say(outcome(lock_range($path, LOCK_EX, 0, 10, @$options))) });
        is $peer->hear, 'undef ' . EACCES, "options (@$options): undef with \$! EACCES";
        $peer->wait;
    }
    my $peer = as_reader(sub { $_[0]->say(outcome(lock_range($path, LOCK_EX | LOCK_NB, 0, 0))) });
    is $peer->hear, 'undef ' . EACCES, 'LOCK_EX|LOCK_NB: undef with $! EACCES';
    $peer->wait;
};

subtest 'lock_range LOCK_EX on a directory: EISDIR' => sub {
    my $peer = as_reader(sub { $_[0]->say(outcome(lock_range($dir, LOCK_EX, 0, 1))) });
    is $peer->hear, 'undef ' . EISDIR, 'undef with $! EISDIR';
    $peer->wait;
};

subtest 'a shared range still falls back to read-only, and holds' => sub {
    my $peer = as_reader(sub {
        my ($parent) = @_;
        my $guard = lock_range($path, LOCK_SH, 0, 10);
        $parent->say(outcome($guard));
        $parent->expect('done');
    });
    is $peer->hear, 'guard', 'LOCK_SH: a guard';
    my $conflict = range_conflict($path, LOCK_EX, 0, 10);
    ok $conflict && $conflict->{mode} == LOCK_SH, 'the kernel shows a shared lock on the bytes'
      or diag explain $conflict;
    $peer->say('done');
    $peer->wait;
};

subtest 'lock_file LOCK_EX still falls back to read-only (flock(2) allows it)' => sub {
    my $peer = as_reader(sub {
        my ($parent) = @_;
        my $guard = lock_file($path, LOCK_EX);
        $parent->say(outcome($guard));
        $parent->expect('done');
    });
    is $peer->hear, 'guard', 'LOCK_EX: a guard';
    open my $fh, '<', $path or die "open $path: $!";
    ok !flock($fh, LOCK_SH | LOCK_NB), 'another process cannot take even a shared flock';
    $peer->say('done');
    $peer->wait;
};

done_testing;
