#!perl
# lock_file_async / lock_range_async under real event loops: AnyEvent,
# IO::Async and Mojo::IOLoop. While the wait is pending the loop keeps
# running its timers; the holder (another process) lets go only after the
# loop has ticked several times, and the waiter's handle then wakes the loop,
# whose callback gets the guard. The lock is checked from another process.
# A loop whose module is missing is skipped, saying so.
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use lib 't/lib';
use LockerTest qw(probe holder scratch_file spawn release_holder range_holder);
use File::Locker qw(:flock lock_file_async lock_range_async);

my $TICKS  = 5;       # timer ticks the loop must run while the wait is pending
my $PERIOD = 0.01;    # seconds between ticks
my $SAFETY = 60;      # seconds: a loop that never wakes fails instead of hanging

# Each loop: a function that runs it until the callback has the guard.
# Arguments: the waiter's handle, on_ready (called when it is readable; returns
# true once done), on_tick (called every PERIOD), fail (safety net).
my %loops = (
    'AnyEvent' => sub {
        my ($fh, $on_ready, $on_tick) = @_;
        my $cv = AnyEvent->condvar;
        my $io = AnyEvent->io(fh => $fh, poll => 'r', cb => sub { $cv->send('done') if $on_ready->() });
        my $timer = AnyEvent->timer(after => $PERIOD, interval => $PERIOD, cb => $on_tick);
        my $safety = AnyEvent->timer(after => $SAFETY, cb => sub { $cv->send('safety net') });
        return $cv->recv;
    },
    'IO::Async' => sub {
        my ($fh, $on_ready, $on_tick) = @_;
        my $loop = IO::Async::Loop->new;
        my $result;
        $loop->watch_io(handle => $fh, on_read_ready => sub {
            return unless $on_ready->();
            $result = 'done';
            $loop->stop;
        });
        my $timer = IO::Async::Timer::Periodic->new(interval => $PERIOD, on_tick => $on_tick);
        $timer->start;
        $loop->add($timer);
        my $safety = $loop->watch_time(after => $SAFETY, code => sub { $result //= 'safety net'; $loop->stop });
        $loop->run;
        $loop->unwatch_io(handle => $fh, on_read_ready => 1);
        $loop->unwatch_time($safety);
        $loop->remove($timer);
        return $result;
    },
    'Mojo::IOLoop' => sub {
        my ($fh, $on_ready, $on_tick) = @_;
        my $loop = Mojo::IOLoop->new;
        my $result;
        $loop->reactor->io($fh => sub {
            return unless $on_ready->();
            $result = 'done';
            $loop->stop;
        })->watch($fh, 1, 0);
        $loop->recurring($PERIOD => $on_tick);
        $loop->timer($SAFETY => sub { $result //= 'safety net'; $loop->stop });
        $loop->start;
        $loop->reactor->remove($fh);
        return $result;
    },
);
my %module = ('AnyEvent' => 'AnyEvent', 'IO::Async' => 'IO::Async::Loop', 'Mojo::IOLoop' => 'Mojo::IOLoop');
my %extra  = ('IO::Async' => ['IO::Async::Timer::Periodic']);

for my $name (sort keys %loops) {
    SKIP: {
        my $ok = eval { require_module($_) for $module{$name}, @{ $extra{$name} || [] }; 1 };
        skip "$name is not installed ($module{$name}); Debian: "
            . { 'AnyEvent' => 'libanyevent-perl', 'IO::Async' => 'libio-async-perl',
                'Mojo::IOLoop' => 'libmojolicious-perl' }->{$name}, 18 unless $ok;
        for my $kind (qw(file range)) {
            my $path   = scratch_file();
            my $holder = $kind eq 'file' ? holder($path, LOCK_EX) : range_holder($path, LOCK_EX, 0, 100);
            my $w      = $kind eq 'file' ? lock_file_async($path, LOCK_EX)
                                         : lock_range_async($path, LOCK_EX, 0, 100);
            my ($ticks, $ready_early, $told, $guard, $ticks_at_guard) = (0, 0, 0);
            my $on_tick = sub {
                $ticks++;
                $ready_early++ if !$told && $w->is_ready;
                if ($ticks == $TICKS && !$told) {
                    $holder->say('release');    # only now may the wait end
                    $told = 1;
                }
            };
            my $on_ready = sub {
                $guard = $w->guard or return 0;
                $ticks_at_guard = $ticks;
                return 1;
            };
            my $result = $loops{$name}->($w->fh, $on_ready, $on_tick);
            is($result, 'done', "$name ($kind): the callback ran");
            ok($told, "$name ($kind): the loop ran $TICKS timer ticks while the wait was pending");
            is($ready_early, 0, "$name ($kind): ... during which the wait had not ended");
            cmp_ok($ticks_at_guard // 0, '>=', $TICKS, "$name ($kind): the guard came after the holder let go");
            isa_ok($guard, 'File::Locker::Guard', "$name ($kind): the callback's guard");
            ok($guard && $guard->is_locked, "$name ($kind): the guard is locked");
            is(release_holder($holder, 1), 'released', "$name ($kind): the holder let go");
            if ($kind eq 'file') {
                is(probe($path, LOCK_SH), 0, "$name ($kind): another process cannot take the file");
                undef $guard;
                is(probe($path, LOCK_EX), 1, "$name ($kind): free again once the guard goes");
            }
            else {
                is(range_probe($path), 'busy', "$name ($kind): another process cannot take the range");
                undef $guard;
                is(range_probe($path), 'free', "$name ($kind): free again once the guard goes");
            }
        }
    }
}

sub require_module {
    my ($module) = @_;
    (my $file = "$module.pm") =~ s{::}{/}g;
    require $file;
}

# Another process's answer, through the kernel, for byte 50 of PATH:
# "free" or "busy".
sub range_probe {
    my ($path) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        my $g = File::Locker::lock_range($path, LOCK_SH | LOCK_NB, 50, 1);
        $parent->say($g ? 'free' : 'busy');
    });
    my $answer = $peer->hear;
    $peer->wait;
    return $answer;
}

done_testing;
