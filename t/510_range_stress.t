#!perl
# Stress: byte-range locks as record locks. A data file holds R records of
# 16 bytes, each an 8-digit counter padded with spaces. P processes each do
# M increments of randomly chosen records, each one under
# lock_range(LOCK_EX) on exactly that record's 16 bytes: read the record,
# add one, write it back, release. A second file holds one occupancy
# marker per record, checked (it must be 0) and set to the pid under the
# record lock, then cleared, which proves mutual exclusion per record. No
# increment may be lost: each record ends equal to the number of increments
# the processes report for it, and the sum is P x M.
#
# Variants: one handle per process (lock_range(FH, ...)); the PATH form
# (lock_range(PATH, ...) for every increment, I/O through $g->fh); and
# distinct records (process i only touches record i, so LOCK_EX|LOCK_NB
# must always be granted at once).
#
# Sizes: LOCKER_STRESS_PROCS processes (default 8), LOCKER_STRESS_ITERS
# increments each (default 100); LOCKER_TEST_SEED repeats a run.

use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes ();
use File::Locker qw(:flock lock_range);
use lib 't/lib';
use LockerTest qw(scratch_file spawn open_rw);

$SIG{PIPE} = 'IGNORE';

my $PROCS   = $ENV{LOCKER_STRESS_PROCS} || 8;
my $ITERS   = $ENV{LOCKER_STRESS_ITERS} || 100;
my $RECORDS = 8;
my $SIZE    = 16;    # bytes per record: "%8d" and 8 bytes of padding
my $SEED    = $ENV{LOCKER_TEST_SEED} // (time ^ $$);
diag "seed $SEED; rerun with LOCKER_TEST_SEED=$SEED";
note "stress sizes: $PROCS processes x $ITERS increments, $RECORDS records";
note 'range locks use ' . (File::Locker::_using_ofd_locks() ? 'open-file-description locks' : 'classic POSIX locks (fallback)');

sub read_record {
    my ($fh, $rec) = @_;
    sysseek($fh, $rec * $SIZE, 0) or die "seek: $!";
    my $got = sysread($fh, my $buf, $SIZE);
    die "read record $rec: " . ($got // $!) unless defined $got && $got == $SIZE;
    $buf =~ /^ *(\d+) *$/ or die "garbage in record $rec: '$buf'";
    return $1;
}

sub write_record {
    my ($fh, $rec, $n) = @_;
    sysseek($fh, $rec * $SIZE, 0) or die "seek: $!";
    my $put = syswrite($fh, sprintf('%8d%8s', $n, ''));
    die "write record $rec: $!" unless defined $put && $put == $SIZE;
}

# A fresh data file and occupancy file of N records, all zero.
sub fresh_files {
    my ($n) = @_;
    my @files = (scratch_file(), scratch_file());
    for my $file (@files) {
        my $fh = open_rw($file);
        write_record($fh, $_, 0) for 0 .. $n - 1;
        close $fh;
    }
    return @files;
}

# One worker. FORM is 'FH' or 'PATH'; PICK(i) gives the record of the i-th
# increment; NB makes every lock LOCK_EX|LOCK_NB (for records nobody else
# touches). Says "ready", waits for "go", then reports
#   "done COUNT0 COUNT1 ... violations V refused F"
# followed by up to three "violation: ..." lines and "end".
sub worker {
    my (%arg) = @_;
    my ($data, $occupancy, $form, $pick, $n) = @arg{qw(data occupancy form pick records)};
    return spawn(sub {
        my ($parent) = @_;
        my $occ = open_rw($occupancy);
        my $fh  = $form eq 'FH' ? open_rw($data) : undef;
        my @count = (0) x $n;
        my ($violations, $refused, @what) = (0, 0);
        my $violation = sub { $violations++; push @what, $_[0] if @what < 3 };
        $parent->say('ready');
        $parent->expect('go');
        for my $i (1 .. $ITERS) {
            my $rec  = $pick->($i);
            my $mode = $arg{nb} ? LOCK_EX | LOCK_NB : LOCK_EX;
            my $g = lock_range($form eq 'FH' ? $fh : $data, $mode, $rec * $SIZE, $SIZE);
            if (!$g) {
                die "lock_range on record $rec: $!" unless $arg{nb} && $! == POSIX::EWOULDBLOCK();
                $refused++;
                $violation->("increment $i: LOCK_NB on record $rec refused");
                next;
            }
            my $io = $form eq 'FH' ? $fh : $g->fh;
            die "no handle for I/O: $!" unless $io;
            my $seen = read_record($occ, $rec);
            $violation->("increment $i: record $rec occupied by $seen") if $seen != 0;
            write_record($occ, $rec, $$);
            write_record($io, $rec, read_record($io, $rec) + 1);
            my $back = read_record($occ, $rec);
            $violation->("increment $i: record $rec occupancy became $back") if $back != $$;
            write_record($occ, $rec, 0);
            $g->release or die "release: $!";
            $count[$rec]++;
        }
        $parent->say("done @count violations $violations refused $refused");
        $parent->say("violation: $_") for @what;
        $parent->say('end');
    });
}

# Runs P workers built by MAKE(i) on N records of DATA/OCCUPANCY and checks
# the outcome.
sub run_variant {
    my ($name, $n, $make) = @_;
    subtest $name => sub {
        my ($data, $occupancy) = fresh_files($n);
        my @peers = map { $make->($_, $data, $occupancy) } 0 .. $PROCS - 1;
        for my $peer (@peers) {
            is($peer->hear, 'ready', 'worker ' . $peer->pid . ' is ready')
              or do { kill 'KILL', $_->pid for @peers; $_->wait for @peers; return };
        }
        my $t0 = Time::HiRes::time();
        $_->say('go') for @peers;

        my @reported = (0) x $n;
        for my $peer (@peers) {
            my $line = $peer->hear // 'end of file';
            my $label = 'worker ' . $peer->pid;
            if (like($line, qr/^done(?: \d+){$n} violations \d+ refused \d+$/, "$label reported")) {
                my @w = split ' ', $line;
                my @count = @w[1 .. $n];
                my ($violations, $refused) = @w[$n + 2, $n + 4];
                $reported[$_] += $count[$_] for 0 .. $n - 1;
                my $sum = 0;
                $sum += $_ for @count;
                is($sum, $ITERS, "$label: $ITERS increments done");
                is($violations, 0, "$label: no occupancy violation");
                is($refused, 0, "$label: no lock refused") if $name =~ /distinct/;
            }
            while (defined(my $more = $peer->hear)) {
                last if $more eq 'end';
                diag "$label: $more";
            }
            is($peer->wait, 0, "$label exited cleanly");
        }
        note sprintf '%s took %.2f s', $name, Time::HiRes::time() - $t0;

        my $fh = open_rw($data);
        my @final = map { read_record($fh, $_) } 0 .. $n - 1;
        close $fh;
        my $total = 0;
        $total += $_ for @final;
        is($total, $PROCS * $ITERS, "the records sum to $PROCS x $ITERS: no increment was lost (seed $SEED)");
        is_deeply(\@final, \@reported, 'each record equals the increments reported for it')
          or diag("records: @final\nreported: @reported");
        $fh = open_rw($occupancy);
        my @occ = map { read_record($fh, $_) } 0 .. $n - 1;
        close $fh;
        is_deeply(\@occ, [(0) x $n], 'every occupancy marker is clear');
    };
}

# Record choice for worker W: a sequence of its own, fixed by the seed.
sub random_picker {
    my ($w) = @_;
    return sub {
        my ($i) = @_;
        srand($SEED + 7919 * $w) if $i == 1;
        return int rand $RECORDS;
    };
}

run_variant("$PROCS processes, random records, lock_range(FH, ...)", $RECORDS, sub {
    my ($w, $data, $occupancy) = @_;
    worker(data => $data, occupancy => $occupancy, form => 'FH', records => $RECORDS, pick => random_picker($w));
});

run_variant("$PROCS processes, random records, lock_range(PATH, ...) with \$g->fh", $RECORDS, sub {
    my ($w, $data, $occupancy) = @_;
    worker(data => $data, occupancy => $occupancy, form => 'PATH', records => $RECORDS, pick => random_picker($w));
});

for my $form (qw(FH PATH)) {
    run_variant("$PROCS processes on distinct records, lock_range($form, LOCK_EX|LOCK_NB, ...)", $PROCS, sub {
        my ($w, $data, $occupancy) = @_;
        worker(data => $data, occupancy => $occupancy, form => $form, records => $PROCS, nb => 1,
            pick => sub { $w });
    });
}

done_testing;
