#!perl
# FILE_LOCKER_NO_OFD follows Perl's truth: unset, '' and '0' keep OFD range
# locks; any other value ('0.0', '00', ' 0', '0E0', 'no', '1') selects
# classic POSIX locks. It used to read only the first character, so '0.0'
# and '00' counted as false.
#
# Each value is tried in a fresh process that takes a range lock and keeps
# it; the kind of lock is read from the kernel (/proc/locks says OFDLCK or
# POSIX), not from the module.
use strict;
use warnings;

use Test::More;
use lib 't/lib';
use LockerTest qw(scratch_file read_line);
use File::Locker ();

plan skip_all => 'OFD locks are not available here' unless File::Locker::_using_ofd_locks()
  || defined $ENV{FILE_LOCKER_NO_OFD};
plan skip_all => '/proc/locks is not readable' unless -r '/proc/locks';

# The kind of lock /proc/locks shows for inode INO held by PID, or 'none'.
sub kernel_kind {
    my ($pid, $ino) = @_;
    open my $locks, '<', '/proc/locks' or die "open /proc/locks: $!";
    while (my $line = <$locks>) {
        next if $line =~ /->/;    # a waiter, not a holder
        my ($kind, $holder, $inode) = $line =~ /^\d+:\s+(\S+)\s+\S+\s+\S+\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/
          or next;
        next unless $inode == $ino;
        return $kind if $kind eq 'OFDLCK' || $holder == $pid;
    }
    return 'none';
}

# Starts a process with FILE_LOCKER_NO_OFD set to VALUE (undef: unset) that
# takes a range lock on PATH; returns the kind of lock the kernel shows.
sub kind_with {
    my ($value, $path) = @_;
    local %ENV = %ENV;
    if (defined $value) { $ENV{FILE_LOCKER_NO_OFD} = $value } else { delete $ENV{FILE_LOCKER_NO_OFD} }
    pipe(my $from_child, my $to_parent) or die "pipe: $!";
    pipe(my $from_parent, my $to_child) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $from_child;
        close $to_child;
        open STDIN, '<&', $from_parent or die "dup: $!";
        open STDOUT, '>&', $to_parent or die "dup: $!";
        exec $^X, '-Mblib', '-MFile::Locker=:flock,lock_range', '-e',
          '$| = 1; my $g = lock_range($ARGV[0], LOCK_EX, 0, 10) or die "lock_range: $!"; print "locked\n"; <STDIN>',
          $path;
        die "exec: $!";
    }
    close $from_parent;
    close $to_parent;
    my $word = read_line($from_child, undef, "the child with FILE_LOCKER_NO_OFD=" . ($value // 'unset'));
    my $kind = defined $word && $word eq 'locked' ? kernel_kind($pid, (stat $path)[1]) : 'child failed';
    close $to_child;
    waitpid $pid, 0;
    return $kind;
}

for my $case ([undef, 'OFDLCK'], ['', 'OFDLCK'], ['0', 'OFDLCK'],
              ['0.0', 'POSIX'], ['00', 'POSIX'], [' 0', 'POSIX'], ['0E0', 'POSIX'],
              ['no', 'POSIX'], ['1', 'POSIX']) {
    my ($value, $want) = @$case;
    my $shown = defined $value ? "'$value'" : 'unset';
    is kind_with($value, scratch_file()), $want,
      "FILE_LOCKER_NO_OFD $shown: " . ($want eq 'POSIX' ? 'classic POSIX locks' : 'OFD locks');
}

done_testing;
