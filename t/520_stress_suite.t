#!perl
# Stress under every lock kind, with all contenders started together:
#
# (a) read-modify-write increments of shared counters under File::Locker::flock,
#     a lock_file guard, a lock_range guard on one record, and lock_range
#     guards on distinct records: the totals are exact and an occupancy marker
#     (set to the holder's pid on entry, checked and cleared on exit) is never
#     found taken by someone else;
# (b) shared and exclusive holders of one lock_file PATH: two shared holders
#     provably hold at once, an exclusive holder keeps a shared taker out, and
#     a log of enter/leave events with monotonic timestamps, replayed, never
#     shows an exclusive holder inside together with anyone;
# (c) 4 KiB records appended in two halves under lock_range($fh, LOCK_EX, 0, 0),
#     by processes and then by ithreads with a handle each: every record comes
#     out whole, none lost, none interleaved.
#
# LOCKER_STRESS_SCALE (default 1) multiplies the per-worker counts
# (increments, iterations, records); the numbers of processes and threads
# stay as they are.
use strict;
use warnings;

use Test::More;
use Config;
use POSIX ();
use lib 't/lib';
use LockerTest qw(spawn probe scratch_file scratch_dir now open_rw);
use File::Locker qw(:flock lock_file lock_range);

my $SCALE = $ENV{LOCKER_STRESS_SCALE} // 1;
$SCALE = 1 unless $SCALE =~ /^\d+(?:\.\d+)?$/ && $SCALE > 0;
sub scaled { my $n = int($_[0] * $SCALE + 0.5); $n < 1 ? 1 : $n }

my $PROCS    = 20;               # (a) counter workers per lock kind
my $INCS     = scaled(50);       # (a) increments per worker
my $RECORDS  = 8;                # (a) records for the distinct-record kind
my $WRITERS  = 4;                # (b) exclusive workers
my $READERS  = 6;                # (b) shared workers
my $MIXED    = scaled(50);       # (b) iterations per worker
my $APPENDERS = 8;               # (c) appending processes
my $THREADS  = 4;                # (c) appending threads
my $APPENDS  = scaled(50);       # (c) records per appender
my $REC      = 4096;             # (c) record size, written in two halves
my $HALF     = $REC / 2;

note "scale $SCALE";
note "(a) $PROCS processes x $INCS increments under each of 4 lock kinds";
note "(b) $WRITERS exclusive + $READERS shared workers x $MIXED iterations on one PATH";
note "(c) $APPENDERS processes, then $THREADS threads, x $APPENDS records of $REC bytes";
note 'range locks: ' . (File::Locker::_using_ofd_locks() ? 'OFD' : 'classic POSIX with the process-wide table');

scratch_dir();    # made here, so that only this process ever removes it

# A word to a worker that has already gone fails with EPIPE instead of
# ending this process.
$SIG{PIPE} = 'IGNORE';

# ---- fixed-width numbers in data files ---------------------------------------

# Slot N of a data file holds a number as 15 digits and a newline, at N*16.
my $SLOT = 16;

sub read_slot {
    my ($fh, $slot) = @_;
    defined sysseek($fh, $slot * $SLOT, 0) or die "seek: $!";
    my $got = sysread($fh, my $buf, $SLOT);
    die "read: $!" unless defined $got;
    return 0 if $got == 0;
    die "short read ($got bytes) in slot $slot" unless $got == $SLOT;
    $buf =~ /^ *(\d+)\n\z/ or die "garbage in slot $slot: '$buf'";
    return $1;
}

sub write_slot {
    my ($fh, $slot, $n) = @_;
    defined sysseek($fh, $slot * $SLOT, 0) or die "seek: $!";
    my $put = syswrite($fh, sprintf("%15d\n", $n));
    die "write: $!" unless defined $put && $put == $SLOT;
}

sub zeroed_file {
    my ($name, $slots) = @_;
    my $path = scratch_file($name);
    my $fh   = open_rw($path);
    truncate($fh, 0) or die "truncate $path: $!";
    write_slot($fh, $_, 0) for 0 .. $slots - 1;
    close $fh;
    return $path;
}

sub slots_of {
    my ($path, $slots) = @_;
    my $fh = open_rw($path);
    my @n  = map { read_slot($fh, $_) } 0 .. $slots - 1;
    close $fh;
    return @n;
}

# ---- workers, a start barrier and their reports ------------------------------

# Starts one spawned worker per BODY. In the child, BODY->(VIOLATION) sets up
# (opens its own handles) and returns RUN; after "ready" and "go", RUN does
# the work, calling VIOLATION->(TEXT) for each violation it sees, and returns
# the number of iterations done. The child then reports "done N violations V",
# up to three violation details, and "end". Returns the peers once every
# worker said it is ready and all have been told "go".
sub start_workers {
    my ($label, @bodies) = @_;
    my @peers;
    for my $body (@bodies) {
        push @peers, spawn(sub {
            my ($parent) = @_;
            my ($violations, @what) = (0);
            my $violation = sub { $violations++; push @what, $_[0] if @what < 3 };
            my $run = $body->($violation);    # sets up: opens its own handles
            $parent->say('ready');
            $parent->expect('go');
            my $done = $run->();
            $parent->say("done $done violations $violations");
            $parent->say("violation: $_") for @what;
            $parent->say('end');
        });
    }
    my $ready = grep { (eval { $_->hear } // '') eq 'ready' } @peers;
    is($ready, scalar @peers, "$label: all " . @peers . ' workers ready');
    eval { $_->say('go') } for @peers;    # one that is gone reports nothing; finish_workers says so
    return @peers;
}

# Collects each worker's report: one assertion on it and one on its exit.
sub finish_workers {
    my ($label, $iters, @peers) = @_;
    my ($clean, $exited) = (0, 0);
    for my $peer (@peers) {
        my $report = eval { $peer->hear } // 'nothing: ' . ($@ || 'end of file');
        if ($report eq "done $iters violations 0") { $clean++ }
        else { diag "$label: worker " . $peer->pid . ": $report" }
        if ($report =~ /^done /) {
            while (defined(my $line = eval { $peer->hear })) {
                last if $line eq 'end';
                diag "$label: worker " . $peer->pid . ": $line";
            }
        }
        else {
            kill 'KILL', $peer->pid;    # stuck or gone: it must not outlive the test
        }
        $exited++ if $peer->wait == 0;
    }
    is($clean, scalar @peers, "$label: every worker did $iters iterations without a violation");
    is($exited, scalar @peers, "$label: every worker exited cleanly");
}

# ---- (a) counters under each lock kind ----------------------------------------

# LOCKER(I, COUNTER_FH) runs in worker I, opens what it needs and returns
# (record, lock, unlock): lock returns true once held (false with $!).
sub counter_stress {
    my ($label, $records, $locker) = @_;
    my $counter   = zeroed_file("counter-$label", $records);
    my $occupancy = zeroed_file("occupancy-$label", $records);
    my $t0        = now();
    my @peers = start_workers($label, map {
        my $i = $_;
        sub {
            my ($violation) = @_;
            my $cnt = open_rw($counter);
            my $occ = open_rw($occupancy);
            my ($r, $lock, $unlock) = $locker->($i, $cnt);
            return sub {
                for my $n (1 .. $INCS) {
                    $lock->() or die "$label: lock: $!";
                    my $seen = read_slot($occ, $r);
                    $violation->("increment $n: record $r occupied by $seen on entry") if $seen != 0;
                    write_slot($occ, $r, $$);
                    write_slot($cnt, $r, read_slot($cnt, $r) + 1);
                    my $back = read_slot($occ, $r);
                    $violation->("increment $n: record $r occupancy became $back") if $back != $$;
                    write_slot($occ, $r, 0);
                    $unlock->();
                }
                return $INCS;
            };
        }
    } 0 .. $PROCS - 1);
    finish_workers($label, $INCS, @peers);
    note sprintf '%s took %.2f s', $label, now() - $t0;

    my @want = (0) x $records;
    $want[ $_ % $records ] += $INCS for 0 .. $PROCS - 1;
    is_deeply([ slots_of($counter, $records) ], \@want,
        "$label: exact totals (" . join('+', @want) . '): no increment lost');
    is_deeply([ slots_of($occupancy, $records) ], [ (0) x $records ], "$label: every occupancy marker is clear");
}

{
    my $lockpath = scratch_file('flock.lock');
    counter_stress('flock LOCK_EX', 1, sub {
        my ($i, $cnt) = @_;
        open my $lfh, '<', $lockpath or die "open $lockpath: $!";
        return (0,
            sub { File::Locker::flock($lfh, LOCK_EX) },
            sub { File::Locker::flock($lfh, LOCK_UN) or die "LOCK_UN: $!" });
    });
}

{
    my $lockpath = scratch_file('guard.lock');
    counter_stress('lock_file guard', 1, sub {
        my ($i, $cnt) = @_;
        my $g;
        return (0,
            sub { $g = lock_file($lockpath, LOCK_EX) },
            sub { $g->release or die "release: $!"; undef $g });
    });
}

counter_stress('lock_range on one record', 1, sub {
    my ($i, $cnt) = @_;
    my $g;
    return (0,
        sub { $g = lock_range($cnt, LOCK_EX, 0, $SLOT) },
        sub { $g->release or die "release: $!"; undef $g });
});

counter_stress("lock_range on $RECORDS distinct records", $RECORDS, sub {
    my ($i, $cnt) = @_;
    my $r = $i % $RECORDS;
    my $g;
    return ($r,
        sub { $g = lock_range($cnt, LOCK_EX, $r * $SLOT, $SLOT) },
        sub { $g->release or die "release: $!"; undef $g });
});

# ---- (b) shared and exclusive holders of one PATH ----------------------------

{
    my $path = scratch_file('mixed.lock');

    # Each reader takes LOCK_SH and says "holding"; the parent tells them to
    # release only once both have said so: they held at the same time.
    my @readers = map {
        spawn(sub {
            my ($parent) = @_;
            my $g = lock_file($path, LOCK_SH, timeout => 10);
            $parent->say($g ? 'holding' : 'failed ' . ($! + 0));
            return unless $g;
            $parent->expect('release');
            $g->release;
            $parent->say('released');
        });
    } 1 .. 2;
    my @said = map { $_->hear // 'nothing' } @readers;
    is_deeply(\@said, [ 'holding', 'holding' ], 'two LOCK_SH holders of one PATH hold at the same time');
    is(probe($path, LOCK_EX), 0, 'while they do, another process cannot take LOCK_EX');
    is(probe($path, LOCK_SH), 1, 'but a third process can share');
    for my $i (0 .. $#readers) {
        my $r = $readers[$i];
        if ($said[$i] eq 'holding') {
            $r->say('release');
            is($r->hear, 'released', 'shared holder ' . $r->pid . ' released');
        }
        is($r->wait, 0, 'shared holder ' . $r->pid . ' exited cleanly');
    }

    my $writer = spawn(sub {
        my ($parent) = @_;
        my $g = lock_file($path, LOCK_EX, timeout => 10);
        $parent->say($g ? 'holding' : 'failed ' . ($! + 0));
        return unless $g;
        $parent->expect('release');
        $g->release;
        $parent->say('released');
    });
    my $held = is($writer->hear, 'holding', 'a LOCK_EX holder of the PATH');
    is(probe($path, LOCK_SH), 0, 'while it holds, another process cannot take LOCK_SH');
    is(probe($path, LOCK_EX), 0, 'nor LOCK_EX');
    if ($held) {
        $writer->say('release');
        is($writer->hear, 'released', 'the LOCK_EX holder released');
    }
    is($writer->wait, 0, 'the LOCK_EX holder exited cleanly');
    is(probe($path, LOCK_SH), 1, 'then LOCK_SH is free');
}

{
    my $path    = scratch_dir() . '/mixed-stress.lock';
    my $log     = scratch_file('mixed.log');
    my $counter = zeroed_file('mixed-counter', 1);
    my $t0      = now();

    # One syswrite per line on an O_APPEND handle: lines never mix.
    my $log_line = sub {
        my ($fh, $what, $kind) = @_;
        my $line = sprintf "%s %s %d %.9f\n", $what, $kind, $$, now();
        my $put  = syswrite($fh, $line);
        die "log write: $!" unless defined $put && $put == length $line;
    };
    my $worker = sub {
        my ($kind) = @_;
        return sub {
            my ($violation) = @_;
            sysopen(my $logfh, $log, POSIX::O_WRONLY() | POSIX::O_APPEND()) or die "open $log: $!";
            my $cnt = open_rw($counter);
            return sub {
                for my $n (1 .. $MIXED) {
                    my $g = lock_file($path, $kind eq 'EX' ? LOCK_EX : LOCK_SH) or die "lock_file: $!";
                    $log_line->($logfh, 'enter', $kind);
                    if ($kind eq 'EX') {
                        write_slot($cnt, 0, read_slot($cnt, 0) + 1);
                    }
                    else {
                        # No writer may change the counter while we share.
                        my @seen = map { read_slot($cnt, 0) } 1 .. 10;
                        $violation->("iteration $n: the counter moved under LOCK_SH: @seen")
                          if grep { $_ != $seen[0] } @seen;
                    }
                    $log_line->($logfh, 'leave', $kind);
                    $g->release or die "release: $!";
                }
                return $MIXED;
            };
        };
    };
    my @peers = start_workers('mixed SH/EX', (map { $worker->('EX') } 1 .. $WRITERS),
                                             (map { $worker->('SH') } 1 .. $READERS));
    finish_workers('mixed SH/EX', $MIXED, @peers);
    note sprintf 'mixed SH/EX took %.2f s', now() - $t0;
    is((slots_of($counter, 1))[0], $WRITERS * $MIXED, 'mixed SH/EX: no exclusive increment lost');

    # Replay the log.
    open my $in, '<', $log or die "open $log: $!";
    my @events;
    my ($garbage, $order_violations, $pairing_violations) = (0, 0, 0);
    while (my $line = <$in>) {
        if ($line =~ /^(enter|leave) (EX|SH) (\d+) (\d+\.\d+)\n\z/) {
            push @events, { what => $1, kind => $2, pid => $3, t => $4, seq => scalar @events };
        }
        else { $garbage++; diag "log: garbage line '$line'" if $garbage <= 3 }
    }
    close $in;
    is($garbage, 0, 'log: every line is well formed');
    is(scalar @events, 2 * $MIXED * ($WRITERS + $READERS), 'log: an enter and a leave for every iteration of every worker');

    # In file order, an exclusive holder's "enter" is directly followed by its
    # own "leave": nobody else wrote a line while it held.
    for my $i (0 .. $#events) {
        my $e = $events[$i];
        next unless $e->{what} eq 'enter' && $e->{kind} eq 'EX';
        my $next = $events[ $i + 1 ];
        next if $next && $next->{what} eq 'leave' && $next->{pid} == $e->{pid};
        $order_violations++;
        diag "log line " . ($i + 2) . ": not the leave of exclusive holder $e->{pid}" if $order_violations <= 3;
    }
    is($order_violations, 0, "log order: nothing comes between an exclusive holder's enter and leave");

    # Per worker: enter and leave alternate, in time order.
    my %last;
    for my $e (@events) {
        my $prev = $last{ $e->{pid} };
        my $ok = $e->{what} eq 'enter'
          ? (!$prev || $prev->{what} eq 'leave')
          : ($prev && $prev->{what} eq 'enter' && $prev->{kind} eq $e->{kind} && $prev->{t} <= $e->{t});
        $pairing_violations++ unless $ok;
        $last{ $e->{pid} } = $e;
    }
    $pairing_violations += grep { $_->{what} ne 'leave' } values %last;
    is($pairing_violations, 0, 'log: each worker enters and leaves in turn');

    # Sweep by time. Every interval lies inside a real hold (enter is stamped
    # after the lock is granted, leave before it is released), so correct
    # locking never shows an exclusive interval overlapping another one. At
    # equal times a leave goes first.
    my ($readers_in, $writers_in, $overlaps, $shared_overlaps, $max_readers) = (0, 0, 0, 0, 0);
    for my $e (sort { $a->{t} <=> $b->{t} || ($a->{what} eq 'leave' ? 0 : 1) <=> ($b->{what} eq 'leave' ? 0 : 1) || $a->{seq} <=> $b->{seq} } @events) {
        if ($e->{what} eq 'enter') {
            if ($e->{kind} eq 'EX') {
                if ($readers_in || $writers_in) {
                    $overlaps++;
                    diag "exclusive holder $e->{pid} entered at $e->{t} with $writers_in writers, $readers_in readers inside"
                      if $overlaps <= 3;
                }
                $writers_in++;
            }
            else {
                if ($writers_in) {
                    $overlaps++;
                    diag "shared holder $e->{pid} entered at $e->{t} with $writers_in writers inside" if $overlaps <= 3;
                }
                $shared_overlaps++ if $readers_in;
                $readers_in++;
                $max_readers = $readers_in if $readers_in > $max_readers;
            }
        }
        else {
            $e->{kind} eq 'EX' ? $writers_in-- : $readers_in--;
        }
    }
    is($overlaps, 0, 'log replay: at no time is an exclusive holder inside together with anyone else');
    note "log replay: shared holders overlapped $shared_overlaps times, at most $max_readers at once";
}

# ---- (c) 4 KiB records appended under lock_range -----------------------------

# A record is two halves; each half is a header "SIG ID:SEQ:HALF|" padded
# with the writer's signature byte SIG.
sub record_half {
    my ($sig, $id, $seq, $half) = @_;
    my $head = sprintf '%s%08d:%06d:%d|', $sig, $id, $seq, $half;
    return $head . ($sig x ($HALF - length $head));
}

# Appends N records through FH, each under lock_range(FH, LOCK_EX, 0, 0)
# (%options passed on), written as two syswrites at the end of the file.
sub append_records {
    my ($fh, $sig, $id, $n, %options) = @_;
    for my $seq (1 .. $n) {
        my $g = lock_range($fh, LOCK_EX, 0, 0, %options) or return "lock_range: $!";
        defined sysseek($fh, 0, 2) or return "seek: $!";
        for my $half (1, 2) {
            my $put = syswrite($fh, record_half($sig, $id, $seq, $half));
            return "write: " . ($put // $!) unless defined $put && $put == $HALF;
        }
        $g->release or return "release: $!";
    }
    return "done $n";
}

# Checks FILE: WRITERS (id => signature byte) appended N records each, every
# record whole. Returns a list of problems (at most a few), empty if none.
sub check_records {
    my ($file, $writers, $n) = @_;
    my @problems;
    my $size = -s $file;
    my $want = keys(%$writers) * $n * $REC;
    push @problems, "size $size, want $want" unless $size == $want;
    open my $in, '<:raw', $file or return "open $file: $!";
    my %next = map { $_ => 1 } keys %$writers;
    my $k = 0;
    while (@problems < 5) {
        my $got = read($in, my $rec, $REC);
        last unless $got;
        if ($got != $REC) {
            push @problems, "record $k: short ($got bytes)";
            last;
        }
        my @halves = map {
            my $h = substr($rec, ($_ - 1) * $HALF, $HALF);
            $h =~ /\A(.)(\d{8}):(\d{6}):([12])\|((.)\6*)?\z/s && (!defined $6 || $6 eq $1)
              ? { sig => $1, id => $2 + 0, seq => $3 + 0, half => $4, len => length $h }
              : undef;
        } 1, 2;
        if (!$halves[0] || !$halves[1]) {
            push @problems, "record $k: a half is garbled: " . substr($rec, 0, 24) . ' / ' . substr($rec, $HALF, 24);
        }
        elsif ($halves[0]{half} != 1 || $halves[1]{half} != 2
            || grep { $halves[0]{$_} ne $halves[1]{$_} } qw(sig id seq)) {
            push @problems, "record $k: halves from different writes: "
              . join(' / ', map { "$_->{sig} $_->{id}:$_->{seq}:$_->{half}" } @halves);
        }
        elsif (!defined $writers->{ $halves[0]{id} } || $writers->{ $halves[0]{id} } ne $halves[0]{sig}) {
            push @problems, "record $k: unknown writer $halves[0]{id} with signature '$halves[0]{sig}'";
        }
        elsif ($halves[0]{seq} != $next{ $halves[0]{id} }) {
            push @problems, "record $k: writer $halves[0]{id} record $halves[0]{seq}, want $next{ $halves[0]{id} }";
            $next{ $halves[0]{id} } = $halves[0]{seq} + 1;    # report each gap once
        }
        else {
            $next{ $halves[0]{id} }++;
        }
        $k++;
    }
    close $in;
    for my $id (sort keys %next) {
        last if @problems >= 5;
        push @problems, "writer $id: " . ($next{$id} - 1) . " records found, want $n" unless $next{$id} == $n + 1;
    }
    return @problems;
}

{
    my $file = scratch_file('append-processes');
    my $t0   = now();
    my %writers;
    my @peers = start_workers('append (processes)', map {
        my $sig = chr(ord('a') + $_);
        sub {
            my ($violation) = @_;
            open my $fh, '+<', $file or die "open $file: $!";
            return sub {
                my $r = append_records($fh, $sig, $$, $APPENDS);
                die "$r\n" unless $r eq "done $APPENDS";
                return $APPENDS;
            };
        };
    } 0 .. $APPENDERS - 1);
    # Signatures follow worker order; ids are the workers' pids.
    $writers{ $peers[$_]->pid } = chr(ord('a') + $_) for 0 .. $#peers;
    finish_workers('append (processes)', $APPENDS, @peers);
    note sprintf 'appending processes took %.2f s', now() - $t0;
    my @problems = check_records($file, \%writers, $APPENDS);
    is(scalar @problems, 0, "append (processes): exactly $APPENDERS x $APPENDS whole records of $REC bytes, none interleaved")
      or diag join "\n", @problems;
}

SKIP: {
    skip 'this perl has no ithreads', 2 unless $Config{useithreads};
    require threads;

    my $file = scratch_file('append-threads');
    my $t0   = now();
    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    pipe(my $go_r,    my $go_w)    or die "pipe: $!";

    # Each thread opens its own handle: two handles of one file conflict
    # (OFD locks; or the process-wide table, where a wait with a timeout waits
    # for the other thread), so the threads exclude each other.
    my @threads = map {
        my $j = $_;
        threads->create({ context => 'scalar' }, sub {
            open my $fh, '+<', $file or return "open $file: $!";
            syswrite($ready_w, "ready\n");
            sysread($go_r, my $go, 1) or return "no go: $!";
            return append_records($fh, chr(ord('A') + $j), $j + 1, $APPENDS, timeout => 30);
        });
    } 0 .. $THREADS - 1;
    my $ready = 0;
    eval {
        local $SIG{ALRM} = sub { die "threads not ready\n" };
        alarm 60;
        while ($ready < $THREADS && defined(my $line = <$ready_r>)) { $ready++ if $line eq "ready\n" }
        alarm 0;
    };
    alarm 0;
    syswrite($go_w, 'g' x $THREADS);    # also when not all are ready: none may stay blocked
    my @results = map { $_->join // 'no result' } @threads;
    note sprintf 'appending threads took %.2f s', now() - $t0;
    is_deeply(\@results, [ ("done $APPENDS") x $THREADS ],
        "append (threads): $THREADS threads each appended $APPENDS records (ready: $ready)");
    my %writers = map { ($_ + 1) => chr(ord('A') + $_) } 0 .. $THREADS - 1;
    my @problems = check_records($file, \%writers, $APPENDS);
    {
        is(scalar @problems, 0, "append (threads): exactly $THREADS x $APPENDS whole records of $REC bytes, none interleaved")
          or diag join "\n", @problems;
    }
}

done_testing;
