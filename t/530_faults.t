#!perl
# Faults around a lock:
#
# - a holder that dies in its critical section -- SIGKILL, SIGINT with the
#   default disposition, or a Perl die -- under File::Locker::flock, a
#   lock_file guard and a lock_range guard: a waiter already blocked (with a
#   timeout) gets the lock promptly and finds the record the holder wrote
#   before the crash intact;
# - a waiter interrupted again and again by a signal whose handler returns
#   keeps waiting, and gets the lock when the holder lets go, every signal
#   handled once (lock_file with a timeout, and flock with a TIMEOUT);
# - the lock file removed, or replaced by a rename, while two lock_file
#   waiters wait: each ends up holding a lock on the file PATH names, and
#   they never hold at the same time.
#
# That a waiter is blocked in the kernel is read from /proc/locks, which
# lists blocked requests as "N: -> KIND ADVISORY MODE PID DEV:INO START END".
use strict;
use warnings;

use Test::More;
use File::Spec ();
use POSIX ();
use lib 't/lib';
use LockerTest qw(spawn probe scratch_file scratch_dir now open_rw read_line blocked_requests);
use File::Locker qw(:flock lock_file lock_range);

plan skip_all => 'needs /proc/locks to see blocked waiters' unless -r '/proc/locks';

scratch_dir();    # made here, so that only this process ever removes it

# A word to a child that has already gone fails with EPIPE (and so fails its
# scenario) instead of ending this process.
$SIG{PIPE} = 'IGNORE';

my $WAIT     = 30;    # seconds: every waiter's timeout, so none waits forever
my $PROMPTLY = 5;     # seconds: bound on a waiter's wait after the holder died
my $SEEN     = 10;    # seconds: how long to look for a blocked waiter
my $SIGNALS  = 20;

note 'range locks: ' . (File::Locker::_using_ofd_locks() ? 'OFD' : 'classic POSIX with the process-wide table');

sub inode_of {
    my ($path) = @_;
    my @st = stat $path or die "stat $path: $!";
    return $st[1];
}

# Number of requests blocked on inode INO in /proc/locks whose pid is one of
# PIDS (or -1, as the kernel shows OFD locks).
sub blocked_on {
    my ($ino, @pids) = @_;
    my %pid = map { $_ => 1 } @pids, -1;
    return scalar grep { $pid{ $_->{pid} } } blocked_requests($ino);
}

# Whether COUNT requests of PIDS come to be blocked on INO within $SEEN
# seconds. A blocked process can only be observed, not told to report; the
# loop reads /proc/locks until it shows them.
sub wait_blocked {
    my ($ino, $count, @pids) = @_;
    my $deadline = now() + $SEEN;
    while (now() < $deadline) {
        return 1 if blocked_on($ino, @pids) >= $count;
    }
    return 0;
}

# ---- children that cannot outlive a failure ----------------------------------

my %reaped;

# Reaps PEER (once) and returns its wait status.
sub finish {
    my ($peer) = @_;
    return $reaped{ $peer->pid } //= $peer->wait;
}

# Kills and reaps what is left of PEERS: used when a scenario failed.
sub kill_all {
    for my $peer (@_) {
        next if defined $reaped{ $peer->pid };
        kill 'KILL', $peer->pid;
        finish($peer);
    }
}

# Runs a scenario; an exception (a child that did not answer in time, an
# unexpected answer) fails it, and its children are killed and reaped.
sub scenario {
    my ($name, $code) = @_;
    my @peers;
    my $ok = eval { $code->(sub { push @peers, @_; return $_[0] }); 1 };
    unless ($ok) {
        fail("$name: ran to the end");
        diag $@;
    }
    kill_all(@peers);
}

# ---- a holder dies in its critical section -----------------------------------

my $RECORD_SIZE = 512;

sub crash_record {
    my ($kind, $pid) = @_;
    my $text = "before crash: $kind holder $pid\n";
    return $text . ('#' x ($RECORD_SIZE - 1 - length $text)) . "\n";
}

sub read_all {
    my ($fh) = @_;
    defined sysseek($fh, 0, 0) or die "seek: $!";
    my $got = sysread($fh, my $buf, 4 * $RECORD_SIZE);
    die "read: $!" unless defined $got;
    return $buf;
}

# For each kind: hold(LOCK, DATA) takes the lock without a timeout and
# returns what keeps it plus the handle to write the record through;
# wait(LOCK, DATA) takes it with timeout => $WAIT and returns what keeps it
# (false with $!) plus the handle to read the data through; blocks_on says
# which file the waiter's request is on.
my %KINDS = (
    'flock' => {
        blocks_on => 'lock',
        hold => sub {
            my ($lock, $data) = @_;
            open my $fh, '<', $lock or die "open $lock: $!";
            File::Locker::flock($fh, LOCK_EX) or die "flock: $!";
            open my $out, '+<', $data or die "open $data: $!";
            return ($fh, $out);
        },
        wait => sub {
            my ($lock, $data) = @_;
            open my $fh, '<', $lock or die "open $lock: $!";
            File::Locker::flock($fh, LOCK_EX, $WAIT) or return;
            open my $in, '<', $data or die "open $data: $!";
            return ($fh, $in);
        },
    },
    'lock_file' => {
        blocks_on => 'lock',
        hold => sub {
            my ($lock, $data) = @_;
            my $g = lock_file($lock, LOCK_EX) or die "lock_file: $!";
            open my $out, '+<', $data or die "open $data: $!";
            return ($g, $out);
        },
        wait => sub {
            my ($lock, $data) = @_;
            my $g = lock_file($lock, LOCK_EX, timeout => $WAIT) or return;
            open my $in, '<', $data or die "open $data: $!";
            return ($g, $in);
        },
    },
    'lock_range' => {
        blocks_on => 'data',
        hold => sub {
            my ($lock, $data) = @_;
            open my $fh, '+<', $data or die "open $data: $!";
            my $g = lock_range($fh, LOCK_EX, 0, 0) or die "lock_range: $!";
            return ($g, $fh);
        },
        wait => sub {
            my ($lock, $data) = @_;
            open my $fh, '+<', $data or die "open $data: $!";
            my $g = lock_range($fh, LOCK_EX, 0, 0, timeout => $WAIT) or return;
            return ($g, $fh);    # read through the locked handle itself
        },
    },
);

for my $kind (qw(flock lock_file lock_range)) {
    for my $how (qw(KILL INT die)) {
        my $name = "$kind, holder ended by " . ($how eq 'die' ? 'die' : "SIG$how");
        scenario($name, sub {
            my ($track) = @_;
            my $k    = $KINDS{$kind};
            my $lock = scratch_file();
            my $data = scratch_file();
            my $ino  = inode_of($k->{blocks_on} eq 'lock' ? $lock : $data);

            my $holder = $track->(spawn(sub {
                my ($parent) = @_;
                $SIG{INT} = 'DEFAULT';
                my ($keep, $out) = $k->{hold}->($lock, $data);
                my $record = crash_record($kind, $$);
                my $put    = syswrite($out, $record);
                die "write: $!" unless defined $put && $put == length $record;
                $parent->say('in critical section');
                my $word = $parent->hear // '';
                if ($word eq 'die') {
                    open STDERR, '>', File::Spec->devnull;    # the die is intended: keep the output quiet
                    die "holder dies in its critical section\n";
                }
            }));
            is($holder->hear, 'in critical section', "$name: the holder wrote its record and is in its critical section");

            my $waiter = $track->(spawn(sub {
                my ($parent) = @_;
                $parent->say('waiting');
                my ($keep, $in) = $k->{wait}->($lock, $data);
                my ($err, $t) = ($! + 0, now());
                if (!$keep) { $parent->say("failed $err"); return }
                $parent->say(sprintf 'got %.9f %s', $t, unpack 'H*', read_all($in));
            }));
            is($waiter->hear, 'waiting', "$name: a waiter is on its way");
            ok(wait_blocked($ino, 1, $waiter->pid), "$name: the waiter is blocked in the lock");

            my $t_end = now();
            if ($how eq 'die') { $holder->say('die') }
            else               { kill $how, $holder->pid or die "kill $how: $!" }
            my $status = finish($holder);
            if ($how eq 'die') {
                is($status, 255 << 8, "$name: the holder died with exit status 255");
            }
            else {
                my $signo = POSIX->can("SIG$how")->();
                is($status & 127, $signo, "$name: the holder was ended by SIG$how");
            }

            my $answer = $waiter->hear // 'nothing';
            my ($t, $hex) = $answer =~ /^got (\d+\.\d+) ([0-9a-f]*)$/;
            ok(defined $t, "$name: the waiter got the lock") or diag "waiter said: $answer";
            ok(defined $t && $t > $t_end, "$name: not before the holder's end");
            ok(defined $t && $t - $t_end < $PROMPTLY, "$name: within $PROMPTLY s of the holder's end")
              or diag sprintf 'it waited %s s after the end', defined $t ? sprintf('%.3f', $t - $t_end) : 'forever';
            is(pack('H*', $hex // ''), crash_record($kind, $holder->pid), "$name: the record written before the crash is intact");
            is(finish($waiter), 0, "$name: the waiter exited cleanly");
        });
    }
}

# ---- a waiter interrupted by signals, again and again ------------------------

# WAIT(PATH) waits for LOCK_EX with a timeout; returns what keeps the lock,
# or false with $!.
my %SIGNAL_WAITS = (
    'lock_file(timeout => 30)' => sub {
        my ($path) = @_;
        return lock_file($path, LOCK_EX, timeout => $WAIT);
    },
    'flock(FH, LOCK_EX, 30)' => sub {
        my ($path) = @_;
        open my $fh, '<', $path or die "open $path: $!";
        return File::Locker::flock($fh, LOCK_EX, $WAIT) ? $fh : undef;
    },
);

for my $name (sort keys %SIGNAL_WAITS) {
    my $wait = $SIGNAL_WAITS{$name};
    scenario("$name under $SIGNALS signals", sub {
        my ($track) = @_;
        my $path = scratch_file();
        my $ino  = inode_of($path);

        my $holder = $track->(spawn(sub {
            my ($parent) = @_;
            open my $fh, '<', $path or die "open $path: $!";
            CORE::flock($fh, LOCK_EX) or die "flock: $!";
            $parent->say('locked');
            $parent->expect('release');
            CORE::flock($fh, LOCK_UN) or die "unlock: $!";
            $parent->say('released');
        }));
        is($holder->hear, 'locked', "$name: a holder has the lock");

        # The waiter's handler acknowledges each signal on its own pipe.
        pipe(my $ack_r, my $ack_w) or die "pipe: $!";
        my $waiter = $track->(spawn(sub {
            my ($parent) = @_;
            close $ack_r;
            my $count = 0;
            local $SIG{USR1} = sub { $count++; syswrite($ack_w, "ack $count\n") };
            $parent->say('waiting');
            my $keep = $wait->($path);
            my ($err, $t) = ($! + 0, now());
            $parent->say($keep ? sprintf('locked %d %.9f', $count, $t) : "failed $err after $count signals");
        }));
        close $ack_w;
        is($waiter->hear, 'waiting', "$name: a waiter is on its way");
        ok(wait_blocked($ino, 1, $waiter->pid), "$name: the waiter is blocked in the lock");

        # Each signal is sent only once the previous one was handled and the
        # waiter is back in the kernel's wait.
        my $wpid = $waiter->pid;
        my $signaller = $track->(spawn(sub {
            my ($parent) = @_;
            my $acked = 0;
            for my $i (1 .. $SIGNALS) {
                kill 'USR1', $wpid or last;
                my $line = eval { read_line($ack_r, $SEEN) } // '';
                last unless $line eq "ack $i";
                $acked++;
                last unless wait_blocked($ino, 1, $wpid);
            }
            $parent->say("acked $acked");
        }));
        close $ack_r;
        is($signaller->hear, "acked $SIGNALS", "$name: $SIGNALS signals sent, each handled once and in turn");
        is(finish($signaller), 0, "$name: the signaller exited cleanly");
        ok(blocked_on($ino, $wpid) >= 1, "$name: the waiter still waits after $SIGNALS signals");

        my $t_release = now();
        $holder->say('release');
        is($holder->hear, 'released', "$name: the holder released");
        my $answer = $waiter->hear // 'nothing';
        my ($count, $t) = $answer =~ /^locked (\d+) (\d+\.\d+)$/;
        ok(defined $count, "$name: the waiter got the lock") or diag "waiter said: $answer";
        is($count, $SIGNALS, "$name: its handler ran exactly $SIGNALS times");
        cmp_ok($t // 0, '>', $t_release, "$name: it got the lock only after the holder let go");
        is(finish($holder), 0, "$name: the holder exited cleanly");
        is(finish($waiter), 0, "$name: the waiter exited cleanly");
    });
}

# ---- the lock file removed or replaced while others wait ---------------------

sub marker {
    my ($fh, $value) = @_;
    defined sysseek($fh, 0, 0) or die "seek: $!";
    if (defined $value) {
        my $text = sprintf "%15d\n", $value;
        my $put  = syswrite($fh, $text);
        die "write: $!" unless defined $put && $put == length $text;
        return $value;
    }
    my $got = sysread($fh, my $buf, 16);
    die "read: $!" unless defined $got;
    return 0 if $got == 0;
    $buf =~ /^ *(\d+)\n\z/ or die "garbage marker '$buf'";
    return $1;
}

for my $how ('removed', 'replaced by a rename') {
    my $name = "lock file $how";
    scenario($name, sub {
        my ($track) = @_;
        my $path      = scratch_dir() . '/' . ($how eq 'removed' ? 'removed' : 'replaced') . '.lock';
        my $occupancy = scratch_file();
        {
            my $fh = open_rw($occupancy);
            marker($fh, 0);
        }

        my $holder = $track->(spawn(sub {
            my ($parent) = @_;
            my $g = lock_file($path, LOCK_EX) or die "lock_file: $!";
            $parent->say('locked');
            $parent->expect('release');
            $g->release;
            $parent->say('released');
        }));
        is($holder->hear, 'locked', "$name: a holder has lock_file(PATH, LOCK_EX)");
        my $old = inode_of($path);

        # Both waiters report on one pipe: "holding PID ENTRY PATH_INO FH_INO"
        # (ENTRY 1 if the occupancy marker was clear), then "released PID EXIT"
        # (EXIT 1 if the marker still held its pid).
        pipe(my $report_r, my $report_w) or die "pipe: $!";
        my @waiters = map {
            $track->(spawn(sub {
                my ($parent) = @_;
                close $report_r;
                my $report = sub { syswrite($report_w, "@_\n") };
                my $occ = open_rw($occupancy);
                $parent->say('waiting');
                my $g = lock_file($path, LOCK_EX, timeout => $WAIT);
                if (!$g) { $report->('failed', $$, $! + 0); return }
                my $entry = marker($occ) == 0 ? 1 : 0;
                marker($occ, $$);
                my @on_path = stat $path;
                my @locked  = stat $g->fh or die "stat of the locked handle: $!";
                $report->('holding', $$, $entry, $on_path[1] // 'none', $locked[1]);
                $parent->expect('release');
                my $exit = marker($occ) == $$ ? 1 : 0;
                marker($occ, 0);
                $g->release;
                $report->('released', $$, $exit);
            }));
        } 1 .. 2;
        close $report_w;
        my %waiter = map { $_->pid => $_ } @waiters;
        is($_->hear, 'waiting', "$name: waiter " . $_->pid . ' is on its way') for @waiters;
        ok(wait_blocked($old, 2, keys %waiter), "$name: both waiters are blocked on the lock file");

        my $new;
        if ($how eq 'removed') {
            unlink $path or die "unlink $path: $!";
        }
        else {
            my $fresh = "$path.new";
            open my $fh, '>', $fresh or die "create $fresh: $!";
            close $fh;
            rename $fresh, $path or die "rename $fresh: $!";
            $new = inode_of($path);
        }
        $holder->say('release');
        is($holder->hear, 'released', "$name: the holder released");
        is(finish($holder), 0, "$name: the holder exited cleanly");

        my (%holding, %released, @order);
        while (keys(%released) < 2) {
            my $line = read_line($report_r, 60) // die "the waiters' reports ended early\n";
            my ($what, $pid, @rest) = split ' ', $line;
            die "unexpected report '$line'\n" unless $waiter{$pid // ''};
            if ($what eq 'failed') {
                fail("$name: waiter $pid got the lock");
                diag "errno $rest[0]";
                $released{$pid} = 1;
            }
            elsif ($what eq 'holding') {
                my ($entry, $on_path, $locked) = @rest;
                my $label = (@order ? 'second' : 'first') . " holder ($pid)";
                push @order, $pid;
                $holding{$pid} = $locked;
                is($entry, 1, "$name: $label found nobody inside");
                is($on_path, $locked, "$name: $label holds a lock on the file PATH names");
                is($locked, $new, "$name: $label holds the file renamed over PATH") if defined $new;
                my ($other) = grep { !exists $holding{$_} } keys %waiter;
                if ($other) {
                    is(probe($path, LOCK_EX), 0, "$name: while $label holds, the file at PATH is locked");
                    ok(wait_blocked($locked, 1, $other), "$name: while $label holds, the other waiter waits on that file");
                }
                $waiter{$pid}->say('release');
            }
            elsif ($what eq 'released') {
                is($rest[0], 1, "$name: waiter $pid was alone inside until it released");
                $released{$pid} = 1;
            }
            else {
                die "unexpected report '$line'\n";
            }
        }
        is(scalar @order, 2, "$name: both waiters held the lock, one after the other");
        is($holding{ $order[0] }, $holding{ $order[1] // 0 } // -1, "$name: both locked the same file")
          if @order == 2;
        is(inode_of($path), $holding{ $order[0] // 0 } // -1, "$name: the one PATH still names");
        is(finish($_), 0, "$name: waiter " . $_->pid . ' exited cleanly') for @waiters;
    });
}

done_testing;
