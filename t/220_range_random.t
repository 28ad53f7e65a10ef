#!perl
# Randomised model check of lock_range on several handles of one file.
#
# One process holds a changing set of guards on up to three handles (three
# separate opens, so three lock owners) and performs random operations:
# take (LOCK_SH or LOCK_EX, always LOCK_NB), release, upgrade(LOCK_NB),
# downgrade. A pure-Perl model predicts every outcome: a take or an upgrade
# is refused (EWOULDBLOCK) exactly when a guard of ANOTHER handle covers an
# overlapping byte in a conflicting mode; guards on the same handle never
# conflict and never undo each other. After every operation a helper
# process, which opened the file on its own, classifies bytes 0..80 with
# range_conflict as free, shared or exclusive, and that must equal the
# strongest mode the model has on each byte over all handles.
#
# LOCKER_TEST_SEED repeats a run; LOCKER_RANDOM_OPS sets the number of
# operations (default 3000).

use strict;
use warnings;

use Test::More;
use POSIX qw(EWOULDBLOCK);
use Time::HiRes ();
use File::Locker qw(:flock lock_range range_conflict);
use lib 't/lib';
use LockerTest qw(scratch_file spawn);

$SIG{PIPE} = 'IGNORE';

my $SEED = $ENV{LOCKER_TEST_SEED} // (time ^ $$);
my $OPS  = $ENV{LOCKER_RANDOM_OPS} || 3000;
diag "seed $SEED; rerun with LOCKER_TEST_SEED=$SEED";
srand $SEED;

my $OFD      = File::Locker::_using_ofd_locks();
my $HANDLES  = 3;
my $LAST     = 80;          # bytes 0..$LAST are modelled and checked
my $INF      = 2**40;       # exclusive end of a LENGTH 0 range
my $MAX_LIVE = 24;          # fewer takes once this many guards are live
my %NAME     = (LOCK_SH() => 'SH', LOCK_EX() => 'EX');
note 'range locks use ' . ($OFD ? 'open-file-description locks' : 'classic POSIX locks (fallback)');

my $path = scratch_file('random.dat');

# ---- the helper: looks at the file from outside ---------------------------
#
# On "scan" it answers with one character per byte 0..$LAST: '.' free,
# 's' shared, 'x' exclusive, '?' when range_conflict's answer is
# inconsistent (a conflict that does not cover the byte, a LOCK_SH query
# answered with a shared lock, an unexpected pid). Spawned before this
# process opens its handles, so it shares none of them.
my $expected_pid = $OFD ? 'undef' : $$;
my $helper = spawn(sub {
    my ($parent) = @_;
    open my $fh, '+<', $path or die "open $path: $!";
    while (defined(my $cmd = $parent->hear)) {
        last if $cmd eq 'quit';
        die "helper: unknown command '$cmd'\n" unless $cmd eq 'scan';
        my $map = '';
        for my $byte (0 .. $LAST) {
            my $c = range_conflict($fh, LOCK_SH, $byte, 1);
            my $class = 'x';
            if (!$c) {
                $c = range_conflict($fh, LOCK_EX, $byte, 1);
                $class = $c ? 's' : '.';
            }
            if ($c) {
                my $end = $c->{length} ? $c->{offset} + $c->{length} : $INF;
                my $mode = $class eq 'x' ? LOCK_EX : LOCK_SH;
                $class = '?' unless $c->{mode} == $mode && $c->{offset} <= $byte && $byte < $end
                  && ($c->{pid} // 'undef') eq $expected_pid;
            }
            $map .= $class;
        }
        $parent->say($map);
    }
});

my @fh = map {
    open my $fh, '+<', $path or die "open $path: $!";
    $fh;
} 1 .. $HANDLES;

# ---- the model --------------------------------------------------------------

my %live;          # id => { g, h, mode, off, len, end }
my $next_id = 0;

sub overlap { my ($a0, $a1, $b0, $b1) = @_; return $a0 < $b1 && $b0 < $a1 }

# Guards of handles other than H that conflict with MODE on [OFF, END).
sub conflicting {
    my ($h, $mode, $off, $end, $except) = @_;
    return grep {
        my $o = $live{$_};
        $o->{h} != $h && ($mode == LOCK_EX || $o->{mode} == LOCK_EX)
          && overlap($off, $end, $o->{off}, $o->{end}) && (!defined $except || $_ != $except)
    } sort { $a <=> $b } keys %live;
}

# Strongest mode per byte 0..$LAST: for one handle (H defined) or for all.
sub strongest {
    my ($h) = @_;
    my @m = (0) x ($LAST + 1);
    for my $o (values %live) {
        next if defined $h && $o->{h} != $h;
        my $end = $o->{end} > $LAST + 1 ? $LAST + 1 : $o->{end};
        for my $b ($o->{off} .. $end - 1) {
            $m[$b] = $o->{mode} if $o->{mode} > $m[$b];
        }
    }
    return @m;
}

sub model_map {
    my %char = (0 => '.', LOCK_SH() => 's', LOCK_EX() => 'x');
    return join '', map { $char{$_} } strongest(undef);
}

sub range_text {
    my ($off, $len) = @_;
    return "[$off," . ($len ? $off + $len : 'EOF') . ')';
}

sub guard_text {
    my ($id) = @_;
    my $o = $live{$id};
    return "guard $id (h$o->{h} $NAME{$o->{mode}} " . range_text($o->{off}, $o->{len}) . ')';
}

# ---- the run ---------------------------------------------------------------

my @log;           # the last few operations, for the failure report
my $mismatch;      # the first disagreement
my %count;
my $checks = 0;

sub fail_at {
    my ($op, $what) = @_;
    $mismatch //= "op $op (seed $SEED): $what";
}

sub check_kernel {
    my ($op) = @_;
    $checks++;
    $helper->say('scan');
    my $got  = $helper->hear // 'end of file';
    my $want = model_map();
    return 1 if $got eq $want;
    fail_at($op, "kernel state differs from the model\n  bytes     "
          . join('', map { $_ % 10 } 0 .. $LAST) . "\n  model     $want\n  helper    $got");
    return 0;
}

sub check_guards {
    my ($op) = @_;
    for my $id (sort { $a <=> $b } keys %live) {
        my $o = $live{$id};
        my @bad;
        push @bad, 'is_locked false' unless $o->{g}->is_locked;
        push @bad, 'mode ' . $o->{g}->mode unless $o->{g}->mode == $o->{mode};
        push @bad, 'offset ' . $o->{g}->offset unless $o->{g}->offset == $o->{off};
        push @bad, 'length ' . $o->{g}->length unless $o->{g}->length == $o->{len};
        if (@bad) {
            fail_at($op, guard_text($id) . ': ' . join(', ', @bad));
            return 0;
        }
    }
    return 1;
}

# In-process range_conflict on handle H must agree with the model: undef
# exactly when no other handle conflicts, otherwise a lock of a conflicting
# mode that overlaps the request, held there by another handle.
sub check_range_conflict {
    my ($op, $h, $mode, $off, $len, $end) = @_;
    my @others = conflicting($h, $mode, $off, $end);
    my $c = range_conflict($fh[$h], $mode, $off, $len);
    my $what = "range_conflict(h$h, $NAME{$mode}, " . range_text($off, $len) . ')';
    if (!@others) {
        return 1 unless defined $c;
        fail_at($op, "$what: reported $NAME{$c->{mode}} at $c->{offset}+$c->{length}, the model has no conflict");
        return 0;
    }
    if (!defined $c) {
        fail_at($op, "$what: undef, the model has a conflict with " . join(', ', map { guard_text($_) } @others));
        return 0;
    }
    my $c_end = $c->{length} ? $c->{offset} + $c->{length} : $INF;
    my $ok = ($mode == LOCK_EX || $c->{mode} == LOCK_EX) && overlap($off, $end, $c->{offset}, $c_end)
      && ($c->{pid} // 'undef') eq $expected_pid;
    if ($ok) {    # some other handle holds that mode on a byte both ranges cover
        $ok = 0;
        my ($from, $to) = ($off > $c->{offset} ? $off : $c->{offset}, $end < $c_end ? $end : $c_end);
        $to = $LAST + 1 if $to > $LAST + 1;
        HANDLE: for my $other (grep { $_ != $h } 0 .. $HANDLES - 1) {
            my @m = strongest($other);
            for my $b ($from .. $to - 1) {
                if ($m[$b] == $c->{mode}) { $ok = 1; last HANDLE }
            }
        }
    }
    return 1 if $ok;
    fail_at($op, "$what: reported $NAME{$c->{mode}} at $c->{offset}+$c->{length} pid "
          . ($c->{pid} // 'undef') . ', which the model does not explain');
    return 0;
}

sub op_take {
    my ($op) = @_;
    my $h    = int rand $HANDLES;
    my $mode = rand() < 0.5 ? LOCK_SH : LOCK_EX;
    my $off  = int rand 64;
    my $len  = rand() < 0.05 ? 0 : 1 + int rand 16;
    my $end  = $len ? $off + $len : $INF;
    my $desc = "take h$h $NAME{$mode} " . range_text($off, $len);
    return 0 unless check_range_conflict($op, $h, $mode, $off, $len, $end);
    my @others  = conflicting($h, $mode, $off, $end);
    my $predict = @others ? 'refused' : 'granted';
    local $! = 0;
    my $g = lock_range($fh[$h], $mode | LOCK_NB, $off, $len);
    my $errno = $! + 0;
    my $got = $g ? 'granted' : 'refused';
    push @log, "op $op: $desc -> $got (model: $predict)";
    $count{"take $got"}++;
    if ($got ne $predict) {
        fail_at($op, "$desc was $got" . ($g ? '' : " (errno $errno)") . ", the model says $predict"
              . (@others ? ' because of ' . join(', ', map { guard_text($_) } @others) : ''));
        return 0;
    }
    if (!$g) {
        return 1 if $errno == EWOULDBLOCK;
        fail_at($op, "$desc was refused with errno $errno, not EWOULDBLOCK");
        return 0;
    }
    my $id = $next_id++;
    $live{$id} = { g => $g, h => $h, mode => $mode, off => $off, len => $len, end => $end };
    $log[-1] .= " as guard $id";
    return 1;
}

sub op_release {
    my ($op, $id) = @_;
    my $how = rand() < 0.5 ? 'release' : 'drop';    # ->release, or let the guard go
    push @log, "op $op: $how " . guard_text($id);
    $count{$how}++;
    my $o = delete $live{$id};
    if ($how eq 'drop') {
        undef $o;    # the last reference: DESTROY releases
        return 1;
    }
    if (!$o->{g}->release) {
        fail_at($op, 'release of ' . "guard $id returned false");
        return 0;
    }
    if ($o->{g}->is_locked) {
        fail_at($op, "guard $id is still locked after release");
        return 0;
    }
    return 1;
}

sub op_upgrade {
    my ($op, $id) = @_;
    my $o = $live{$id};
    my @others  = $o->{mode} == LOCK_EX ? () : conflicting($o->{h}, LOCK_EX, $o->{off}, $o->{end}, $id);
    my $predict = @others ? 'refused' : 'granted';
    my $desc    = 'upgrade(LOCK_NB) ' . guard_text($id);
    local $! = 0;
    my $ok    = $o->{g}->upgrade(LOCK_NB);
    my $errno = $! + 0;
    my $got   = $ok ? 'granted' : 'refused';
    push @log, "op $op: $desc -> $got (model: $predict)";
    $count{"upgrade $got"}++;
    if ($got ne $predict) {
        fail_at($op, "$desc was $got" . ($ok ? '' : " (errno $errno)") . ", the model says $predict"
              . (@others ? ' because of ' . join(', ', map { guard_text($_) } @others) : ''));
        return 0;
    }
    if ($ok) {
        $o->{mode} = LOCK_EX;
        return 1;
    }
    if ($errno != EWOULDBLOCK) {
        fail_at($op, "$desc was refused with errno $errno, not EWOULDBLOCK");
        return 0;
    }
    # Nothing else runs in between, so the shared lock can always be kept.
    if (!$o->{g}->is_locked || $o->{g}->mode != LOCK_SH) {
        fail_at($op, "after the refused $desc the guard is " . ($o->{g}->is_locked ? 'locked' : 'not locked')
              . ' in mode ' . $o->{g}->mode . ', not still LOCK_SH');
        return 0;
    }
    return 1;
}

sub op_downgrade {
    my ($op, $id) = @_;
    my $o    = $live{$id};
    my $desc = 'downgrade ' . guard_text($id);
    push @log, "op $op: $desc";
    $count{downgrade}++;
    local $! = 0;
    if (!$o->{g}->downgrade) {
        fail_at($op, "$desc returned false (errno " . ($! + 0) . ')');
        return 0;
    }
    $o->{mode} = LOCK_SH;
    return 1;
}

my $t0   = Time::HiRes::time();
my $done = 0;
OP: for my $op (1 .. $OPS) {
    my @ids  = sort { $a <=> $b } keys %live;
    my $r    = rand;
    my $take = !@ids || $r < (@ids >= $MAX_LIVE ? 0.15 : 0.45);
    my $ok;
    if ($take) {
        $ok = op_take($op);
    }
    else {
        my $id = $ids[int rand @ids];
        $r = rand;
        $ok = $r < 0.45 ? op_release($op, $id) : $r < 0.75 ? op_upgrade($op, $id) : op_downgrade($op, $id);
    }
    shift @log while @log > 20;
    last OP unless $ok && check_guards($op) && check_kernel($op);
    $done = $op;
}
my $elapsed = Time::HiRes::time() - $t0;
note sprintf '%d of %d operations done, %d kernel checks in %.2f s', $done, $OPS, $checks, $elapsed;
note join ', ', map { "$_: $count{$_}" } sort keys %count;

ok(!defined $mismatch, "$OPS random operations agree with the model and the kernel (seed $SEED)")
  or diag("$mismatch\nlast operations:\n  " . join("\n  ", @log) . "\nrerun with LOCKER_TEST_SEED=$SEED");

SKIP: {
    skip 'too few operations for the coverage checks', 4 if $OPS < 1000 || defined $mismatch;
    ok($count{'take granted'},    'some takes were granted');
    ok($count{'take refused'},    'some takes were refused');
    ok($count{'upgrade granted'}, 'some upgrades were granted');
    ok($count{'upgrade refused'}, 'some upgrades were refused');
}
ok($checks >= $OPS / 10 || defined $mismatch, "the kernel state was checked $checks times");

# Let every guard go; nothing may stay locked.
$_->{g}->release for values %live;
%live = ();
$helper->say('scan');
is($helper->hear, '.' x ($LAST + 1), 'after every guard is released, bytes 0..80 are free');
close $_ for @fh;

$helper->say('quit');
is($helper->wait, 0, 'the helper exited cleanly');

done_testing;
