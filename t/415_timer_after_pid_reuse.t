#!perl
# A thread keeps the POSIX timer of its timed waits; a forked child must
# never take its parent's for its own, even when it is given the very pid
# the parent had. Here, in a new pid namespace: A waits with a timeout
# (making its timer) and forks B; A exits; B forks C with A's pid; C's
# timed waits must end at their deadline. Needs root (unshare, and
# ns_last_pid to hand C that pid).
use strict;
use warnings;

use Test::More;
use POSIX ();
use lib 't/lib';
use LockerTest qw(scratch_file);

plan skip_all => 'needs root for a pid namespace' if $> != 0;
plan skip_all => 'needs unshare(1)' if system('unshare -p -f --mount-proc true 2>/dev/null') != 0;

my $ETIMEDOUT = POSIX::ETIMEDOUT();

# Runs as pid 1 of the new namespace; prints one "C ..." line per wait.
my $script = <<'PERL';
use strict;
use warnings;
use POSIX ();
use Time::HiRes qw(time);
use File::Locker qw(:flock flock lock_file_async);
my ($path, $with_waiter) = @ARGV;
$| = 1;
sub pipe_pair { pipe(my $r, my $w) or die "pipe: $!"; $w->autoflush(1); return ($r, $w) }
sub wait_line { my $line = readline($_[0]); defined $line or die "pipe closed\n"; chomp $line; $line }

# Another process holds the file until told to go.
my ($held_r, $held_w) = pipe_pair();
my ($go_r, $go_w)     = pipe_pair();
my $holder = fork // die "fork: $!";
if (!$holder) {
    open(my $h, '<', $path) or die "open: $!";
    CORE::flock($h, LOCK_EX) or die "flock: $!";
    print {$held_w} "held\n";
    wait_line($go_r);
    POSIX::_exit(0);
}
wait_line($held_r);

my ($a_r, $a_w)     = pipe_pair();    # A's pid and result, then B's
my ($b_go_r, $b_go_w) = pipe_pair();  # A is reaped: B may fork C
my $a = fork // die "fork: $!";
if (!$a) {
    open(my $fh, '<', $path) or die "open: $!";
    my $ok = flock($fh, LOCK_EX, 0.05);
    print {$a_w} "A $$ ", ($ok ? 0 : $! + 0), "\n";
    my $b = fork // die "fork: $!";
    if (!$b) {
        wait_line($b_go_r);
        # The next pid handed out is A's.
        open(my $n, '>', '/proc/sys/kernel/ns_last_pid') or die "ns_last_pid: $!";
        print {$n} wait_line($b_go_r) - 1;
        close $n or die "ns_last_pid: $!";
        my $c = fork // die "fork: $!";
        if (!$c) {
            my $waiter = $with_waiter ? lock_file_async($path, LOCK_EX, timeout => 30) : undef;
            open(my $fh1, '<', $path) or die "open: $!";
            local $SIG{ALRM} = sub { die "still blocked\n" };
            alarm 10;
            for my $try (1, 2) {
                my $t0 = time;
                my $ok = eval { flock($fh1, LOCK_EX, 0.2) };
                my $errno = defined $ok ? ($ok ? 0 : $! + 0) : 'died';
                printf {$a_w} "C %d %s %.3f\n", $$, $errno, time - $t0;
            }
            alarm 0;
            $waiter->cancel if $waiter;
            POSIX::_exit(0);
        }
        waitpid($c, 0);
        POSIX::_exit(0);
    }
    POSIX::_exit(0);
}
my $line = wait_line($a_r);
print "$line\n";
my (undef, $a_pid) = split ' ', $line;
waitpid($a, 0);    # A's pid is free again
print {$b_go_w} "go\n$a_pid\n";
print wait_line($a_r), "\n" for 1, 2;
print {$go_w} "go\n";
1 while wait() > 0;
PERL

for my $with_waiter (0, 1) {
    subtest($with_waiter ? 'C also has a pending async wait' : 'C waits alone' => sub {
        my $path = scratch_file();
        my $program = scratch_file('program.pl');
        open(my $out, '>', $program) or die "open $program: $!";
        print {$out} $script;
        close $out or die "write $program: $!";
        open(my $run, '-|', 'unshare', '-p', '-f', '--mount-proc', $^X,
            (map { "-I$_" } grep { !ref } @INC), $program, $path, $with_waiter)
          or die "unshare: $!";
        my @out = <$run>;
        close $run;
        my ($a_line, @c_lines) = grep { /^[AC] / } @out;
        ok(defined $a_line, 'A waited') or diag(@out);
        my (undef, $a_pid, $a_errno) = split ' ', $a_line // '';
        is($a_errno, $ETIMEDOUT, "A's timed wait timed out");
        is(scalar @c_lines, 2, 'C waited twice') or diag(@out);
        for my $c (@c_lines) {
            my (undef, $c_pid, $errno, $took) = split ' ', $c;
            is($c_pid, $a_pid, "C has A's pid ($a_pid)");
            is($errno, $ETIMEDOUT, 'C: ETIMEDOUT');
            cmp_ok($took, '>=', 0.2, 'C: not before the deadline');
            cmp_ok($took, '<', 3, 'C: not long after it');
        }
    });
}

done_testing;
