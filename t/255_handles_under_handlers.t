#!perl
# Handles that are magical, that a signal handler changes during a wait, or
# whose flush dies: whatever Perl code runs inside a call, a lock is either
# handed to the caller or not held at all, seen from another process.
use strict;
use warnings;

use Test::More;
use POSIX ();
use lib 't/lib';
use LockerTest qw(scratch_file probe holder release_and_wait open_rw);
use File::Locker qw(:flock flock lock_file lock_range);
use Tie::Hash ();

my $EBADF = POSIX::EBADF();

# A tied scalar whose first FETCH gives a handle and every later one dies.
package OnceThenDies {
    sub TIESCALAR { my ($class, $fh) = @_; return bless { fh => $fh, n => 0 }, $class }
    sub FETCH { my ($self) = @_; die "FETCH again\n" if $self->{n}++; return $self->{fh} }
}

# A :via layer whose FLUSH dies while $die is set.
package FlushDies {
    our $die = 0;
    sub PUSHED { return bless {}, $_[0] }
    sub WRITE { my ($self, $buf, $fh) = @_; print {$fh} $buf; return length $buf }
    sub FLUSH { die "FLUSH dies\n" if $die; return 0 }
}

package main;

subtest 'a tied handle is fetched once: a FETCH that would die is never reached' => sub {
    my $path = scratch_file();
    my $fh   = open_rw($path);
    tie my $tied, 'OnceThenDies', $fh;
    my $g = eval { lock_file($tied, LOCK_EX) };
    is($@, '', 'lock_file did not fetch the handle twice');
    ok($g, 'and locked') or diag("\$! = $!");
    is(probe($path, LOCK_SH), 0, 'held, seen from outside');
    undef $g;
    is(probe($path, LOCK_SH), 1, 'free once the guard goes');
};

subtest 'a handle in a tied hash element is a handle' => sub {
    my $path = scratch_file();
    tie my %h, 'Tie::StdHash';
    $h{fh} = open_rw($path);
    my $g = lock_range($h{fh}, LOCK_EX, 0, 10);
    ok($g, 'lock_range through $h{fh}') or diag("\$! = $!");
    is(probe($path, LOCK_SH), 1, 'flock sees nothing of a range lock');
    undef $g;
};

subtest 'a flush that dies when the guard goes still lets go of the lock' => sub {
    my $path = scratch_file();
    open(my $fh, '>>:via(FlushDies)', $path) or die "open: $!";
    local $FlushDies::die = 0;
    my $g = lock_file($fh, LOCK_EX) or die "lock_file: $!";
    print {$fh} 'under the lock';
    $FlushDies::die = 1;
    ok(!eval { undef $g; 1 }, 'the free dies with the flush');
    like($@, qr/FLUSH dies/, 'with its error');
    $FlushDies::die = 0;    # fork flushes every handle
    is(probe($path, LOCK_SH), 1, 'yet nothing is held');
};

subtest 'a scalar holding a glob may be reassigned under the guard' => sub {
    my $path = scratch_file();
    no strict 'refs';
    open(LOCKED_FH, '>>', $path) or die "open: $!";
    my $glob = *LOCKED_FH;
    my $g = lock_file($glob, LOCK_EX) or die "lock_file: $!";
    $glob = 'something else';
    print LOCKED_FH 'written under the lock';
    ok(defined fileno($g->fh), 'fh is still the locked handle');
    $g->release;
    open(my $in, '<', $path) or die "open: $!";
    is(scalar <$in>, 'written under the lock', 'flushed before the release');
    close LOCKED_FH;
};

sub busy_wait_with_handler {
    my ($call) = @_;
    my ($a, $b) = (scratch_file(), scratch_file());
    my $holder = holder($a, LOCK_EX);
    open(my $fh, '<', $a) or die "open: $!";
    my $number = fileno $fh;
    my $other;
    # The handler closes the handle and opens another file on its number.
    local $SIG{ALRM} = sub { close $fh; open($other, '<', $b) or die "open: $!" };
    alarm 1;
    my $result = $call->($fh);
    my $errno = $! + 0;
    alarm 0;
    is(fileno($other), $number, 'the other file got the descriptor number');
    ok(!$result, 'the wait fails');
    is($errno, $EBADF, 'with EBADF: the handle is closed');
    is(probe($b, LOCK_SH), 1, 'and the other file is not locked');
    release_and_wait($holder);
}

subtest 'a timed wait resumes on what the handle is after the handler: flock' => sub {
    busy_wait_with_handler(sub { File::Locker::flock($_[0], LOCK_SH, 5) });
};

subtest 'the same for lock_file' => sub {
    busy_wait_with_handler(sub { lock_file($_[0], LOCK_SH, timeout => 5) });
};

subtest 'upgrade survives a handler that drops the last reference to the guard' => sub {
    my $path   = scratch_file();
    my $g      = lock_file($path, LOCK_SH) or die "lock_file: $!";
    my $holder = holder($path, LOCK_SH);
    local $SIG{ALRM} = sub { undef $g; release_and_wait($holder) };
    alarm 1;
    ok($g->upgrade(timeout => 5), 'upgraded once the other holder let go');
    alarm 0;
    ok(!defined $g, 'the handler dropped the variable');
    is(probe($path, LOCK_SH), 1, 'and the guard went at the end of the statement');
};

# A path object, as path modules make them: a string when asked.
package PathObject {
    use overload '""' => sub { ${ $_[0] } }, fallback => 1;
    sub new { my ($class, $path) = @_; return bless \$path, $class }
}

package main;

subtest 'a PATH may be an object that stringifies' => sub {
    my $path = scratch_file();
    my $g = lock_file(PathObject->new($path), LOCK_EX);
    ok($g, 'lock_file took it') or diag("\$! = $!");
    is($g && $g->path, $path, 'path is the string');
    is(probe($path, LOCK_SH), 0, 'and the file it names is locked');
    undef $g;
    ok(!eval { lock_file(bless({}, 'NoString'), LOCK_EX); 1 }, 'an object without "" still croaks');
    like($@, qr/PATH or FH expected, not a HASH reference/, 'as before');
};

subtest 'classic locks: is_locked says so when your close dropped them' => sub {
    my $path = scratch_file();
    # A process of its own: the lock kind is chosen when the module loads.
    my $child = <<'PERL';
use File::Locker qw(:flock lock_range);
use lib 't/lib';
use LockerTest qw(open_rw lockf_probe);
my $path = shift;
open(my $fh, '+<', $path) or die "open: $!";
my $g = lock_range($fh, LOCK_EX, 0, 10) or die "lock_range: $!";
my $by_path = lock_range($path, LOCK_SH, 100, 10) or die "lock_range: $!";
print join(' ', $g->is_locked ? 1 : 0, $by_path->is_locked ? 1 : 0,
    lockf_probe($path, LOCK_EX, 0, 10)), "\n";
close $fh;    # POSIX: drops every classic lock of the process on the file
print join(' ', $g->is_locked ? 1 : 0, $by_path->is_locked ? 1 : 0,
    lockf_probe($path, LOCK_EX, 0, 10), lockf_probe($path, LOCK_EX, 100, 10)), "\n";
PERL
    local $ENV{FILE_LOCKER_NO_OFD} = 1;
    open(my $run, '-|', $^X, (map { "-I$_" } grep { !ref } @INC), '-e', $child, $path)
      or die "perl: $!";
    my @lines = <$run>;
    close $run;
    is($lines[0], "1 1 busy\n", 'both held before the close');
    is($lines[1], "0 0 free free\n", 'neither after it, as the kernel says');
};

done_testing;
