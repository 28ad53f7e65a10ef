#!perl
# Timed waits when the wake-up timer cannot be armed.
#
# Under `ulimit -i 0` (RLIMIT_SIGPENDING) timer_create fails with EAGAIN,
# which is EWOULDBLOCK: a timed wait on a busy lock used to answer "busy" at
# once, without having waited at all. The documented rule now: such a wait
# fails at once with ENOLCK, which no caller can take for busy or timed out.
# Everything that needs no timer still works under the limit: a free lock
# is granted, a non-blocking try says EWOULDBLOCK, and a wait without a
# timeout waits until the holder lets go.
#
# Each call runs in `bash -c 'ulimit -i 0; exec perl ...'`, so the limit
# applies to that process only; holders run under the normal limit.
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use POSIX qw(ENOLCK EWOULDBLOCK ETIMEDOUT);
use lib 't/lib';
use LockerTest qw(spawn holder scratch_file read_line release_and_wait release_on_waiter in_path);
use File::Locker qw(lock_range);

# POSIX sh has no `ulimit -i`; bash has.
my $BASH = in_path('bash') or plan skip_all => 'needs bash for ulimit -i';

my $PATIENCE = 30;    # seconds; a safety net for a wait that never ends

# Starts CODE (perl source; @ARGV holds ARGS) in a process limited to no
# queued signals; returns a handle on its output and its pid.
sub start_limited {
    my ($code, @args) = @_;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        exec $BASH, '-c', 'ulimit -i 0 || exit 99; exec "$@"', 'bash',
          $^X, '-Mblib', '-e', "use strict; use warnings; \$| = 1; $code", @args;
        die "exec $BASH: $!";
    }
    return ($out, $pid);
}

# Runs CODE limited; returns its first line of output.
sub run_limited {
    my ($out, $pid) = start_limited(@_);
    my $line = read_line($out, $PATIENCE, 'the limited child');
    close $out;
    return $line // 'no output';
}

# The word for an outcome: "locked", or the errno's name.
my %NAME = (ENOLCK() => 'ENOLCK', EWOULDBLOCK() => 'EWOULDBLOCK', ETIMEDOUT() => 'ETIMEDOUT');
my $REPORT = 'sub report { my ($ok) = @_; print $ok ? "locked\n" : ($! + 0) . "\n" }';
sub word { my ($line) = @_; return $line =~ /^\d+$/ ? $NAME{$line} // "errno $line" : $line }

my %lock_calls = (
    'flock with TIMEOUT' =>
      'use File::Locker qw(:flock flock); open my $fh, "<", $ARGV[0] or die; report(flock($fh, LOCK_EX, $ARGV[1]))',
    'lock_file with timeout' =>
      'use File::Locker qw(:flock lock_file); report(lock_file($ARGV[0], LOCK_EX, timeout => $ARGV[1]))',
    'lock_range with timeout' =>
      'use File::Locker qw(:flock lock_range); report(lock_range($ARGV[0], LOCK_EX, 0, 10, timeout => $ARGV[1]))',
);

# A holder of the whole file (flock) or of bytes 0..9 (an OFD range lock).
sub busy {
    my ($name, $path) = @_;
    return holder($path, LOCK_EX) unless $name =~ /lock_range/;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $guard = lock_range($path, LOCK_EX, 0, 10) or die "lock_range: $!";
        $parent->say('locked');
        $parent->expect('release');
        undef $guard;
        $parent->say('released');
    });
    $peer->expect('locked');
    return $peer;
}

for my $name (sort keys %lock_calls) {
    my $code = "$REPORT; $lock_calls{$name}";
    subtest "$name under ulimit -i 0" => sub {
        my $path = scratch_file();
        is word(run_limited($code, $path, 2)), 'locked', 'a free lock is granted (no timer needed)';

        my $holder = busy($name, $path);
        is word(run_limited($code, $path, 2)), 'ENOLCK',
          'a busy lock with a timeout: ENOLCK at once, not EWOULDBLOCK';
        is word(run_limited($code, $path, 0)), 'EWOULDBLOCK', 'timeout 0 is one try: busy says EWOULDBLOCK';
        release_and_wait($holder);
    };
}

subtest 'flock without a timeout still waits under ulimit -i 0' => sub {
    my $path   = scratch_file();
    my $holder = release_on_waiter($path);
    my ($out, $pid) = start_limited(
        "$REPORT; use File::Locker qw(:flock flock); open my \$fh, '<', \$ARGV[0] or die; "
          . 'print "$$\n"; report(flock($fh, LOCK_EX))', $path);
    my $waiter = read_line($out, $PATIENCE, 'the limited child');
    $holder->say($waiter);
    $holder->expect('released');
    is word(read_line($out, $PATIENCE, 'the limited child') // 'no output'), 'locked',
      'granted once the holder let go';
    close $out;
    $holder->wait;
};

done_testing;
