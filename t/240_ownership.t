#!perl
# Ownership: a lock belongs to its open file description (OFD), and only the
# kernel says what is held. Each claim is checked from another process
# through the kernel: a fresh process that opens the file itself and asks
# with F_OFD_SETLK (which meets OFD and classic POSIX locks alike), flock(2)
# for whole-file locks, or Python's fcntl.lockf for the off_t edges.
#
#   - fork: a child that lets its copy of the parent's guard go and locks the
#     same bytes itself is refused while the parent holds them;
#   - close and reopen under a live guard, onto the same descriptor number;
#   - guards through dup()ed handles compose instead of undoing each other,
#     for ranges and for two whole-file guards on one handle;
#   - closing the caller's handle keeps the guard's lock;
#   - ranges that start at or reach 2**63-1;
#   - Storable cannot copy a guard;
#   - the classic-lock fallback (FILE_LOCKER_NO_OFD=1): File::Locker never
#     drops the process's locks by closing a descriptor, and keeps a bounded
#     number of descriptors open. In OFD mode this part runs in a re-executed
#     copy of this file, because the mode is chosen once per process.
#
# Children are started with LockerTest::spawn, which never returns into the
# parent's code: a child that dies exits 255.

use strict;
use warnings;

use Test::More;
use POSIX qw(EWOULDBLOCK EINVAL SEEK_SET);
use IPC::Open2 qw(open2);
use lib 't/lib';
use LockerTest qw(scratch_dir scratch_file spawn probe holder release_and_wait
  fd_count open_rw try_range try_lock_file refused_ok in_path read_line rerun_classic_ok);
use File::Locker qw(:flock lock_file lock_range range_conflict);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

plan skip_all => 'open-file-description probes need Linux' unless $^O eq 'linux';

my $OFD  = File::Locker::_using_ofd_locks();
my $PART = $ENV{LOCKER_OWNERSHIP_PART} // 'all';    # 'classic': only the fallback part
note 'range locks use ' . ($OFD ? 'open-file-description locks' : 'classic POSIX locks (fallback)');

scratch_dir();    # made here, so that only this process ever removes it

# ---- the view from outside -------------------------------------------------

# F_OFD_* commands and struct flock on Linux (the same numbers on every
# architecture; the layout checked here is the 64-bit one).
use constant { F_OFD_GETLK => 36, F_OFD_SETLK => 37, F_RDLCK => 0, F_WRLCK => 1, F_UNLCK => 2 };
use constant FLOCK_LAYOUT => 's s x4 q q i x4';    # type, whence, start, len, pid: 32 bytes

plan skip_all => 'struct flock layout here is for 64-bit perls' unless length(pack 'q', 0) == 8;

# outside(PATH, [MODE, START, LEN], ...): a fresh process opens PATH itself
# and tries F_OFD_SETLK of MODE on each range in turn (releasing what it
# got); returns one word per range: 'granted', 'refused', or 'error ERRNO'.
sub outside {
    my ($path, @ranges) = @_;
    my $peer = spawn(sub {
        my ($parent) = @_;
        open my $fh, '+<', $path or die "open $path: $!";
        my @words;
        for my $r (@ranges) {
            my ($mode, $start, $len) = @$r;
            my $type = $mode == LOCK_EX ? F_WRLCK : F_RDLCK;
            my $lock = pack FLOCK_LAYOUT, $type, SEEK_SET, $start, $len, 0;
            if (fcntl $fh, F_OFD_SETLK, $lock) {
                my $unlock = pack FLOCK_LAYOUT, F_UNLCK, SEEK_SET, $start, $len, 0;
                fcntl $fh, F_OFD_SETLK, $unlock or die "F_UNLCK: $!";
                push @words, 'granted';
            }
            else {
                push @words, $!{EAGAIN} || $!{EACCES} ? 'refused' : 'error ' . ($! + 0);
            }
        }
        $parent->say(join ' ', @words);
    });
    my $line = $peer->hear // 'end of file';
    my $status = $peer->wait;
    die "outside probe of $path exited with status $status: '$line'\n" if $status;
    return split ' ', $line;
}

# kernel_is(PATH, [[MODE, START, LEN] => WORD], ..., WHAT): outside() over
# the ranges, compared with the expected words.
sub kernel_is {
    my ($path, $pairs, $what) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @ranges = map { $pairs->[2 * $_] } 0 .. $#$pairs / 2;
    my @want   = map { $pairs->[2 * $_ + 1] } 0 .. $#$pairs / 2;
    my @got    = outside($path, @ranges);
    my $text   = join ', ', map { my ($m, $s, $l) = @$_; ($m == LOCK_EX ? 'EX' : 'SH') . " $s+$l" } @ranges;
    return is("@got", "@want", "$what (another process tries $text)");
}

# A descriptor number's fresh read-write open of PATH, placed at number FD.
sub reopen_at {
    my ($path, $fd) = @_;
    open my $fh, '+<', $path or die "open $path: $!";
    return $fh if fileno $fh == $fd;
    POSIX::dup2(fileno $fh, $fd) // die "dup2: $!";
    close $fh;
    open my $at, '+<&=', $fd or die "fdopen $fd: $!";
    return $at;
}

sub run_general {
    fork_relock();
    close_reopen_range();
    dup_composition();
    lock_file_composition();
    close_under_guard();
    off_t_edges();
    storable_copies();
    SKIP: {
        skip 'the classic part below counts descriptors in that mode', 1 unless $OFD;
        descriptors_bounded();
    }
}

sub run_classic_part {
    classic_lock_file_keeps_ranges();
    classic_fork_child_keeps_own();
    descriptors_bounded();
}

# ---- 1. fork, then the child locks the parent's bytes itself ---------------

sub fork_relock {
    for my $form ('PATH', 'FH') {
        subtest "fork: the child lets its copy of a $form range guard go, then locks the same bytes" => sub {
            my $path = scratch_file();
            my $fh   = $form eq 'FH' ? open_rw($path) : undef;
            my $g    = lock_range($fh // $path, LOCK_EX, 0, 100) or die "lock_range: $!";
            my $child = spawn(sub {
                my ($parent) = @_;
                undef $g;                # the child's copy goes: it closes only the child's descriptor
                close $fh if $fh;        # and the caller's handle: its number is free for reuse
                my $target = $fh ? open_rw($path) : $path;    # a new open, on a reused number
                my ($mine, $errno) = try_range($target, LOCK_EX, 0, 100, timeout => 0);
                $parent->say(defined $mine ? 'granted' : "refused $errno");
                $parent->expect('parent released');
                ($mine, $errno) = try_range($target, LOCK_EX, 0, 100, timeout => 0) unless $mine;
                $parent->say(defined $mine ? 'granted' : "refused $errno");
                $parent->say('is_locked ' . ($mine && $mine->is_locked ? 1 : 0));
                $parent->expect('done');
            });
            is($child->hear, 'refused ' . EWOULDBLOCK,
                "while the parent holds [0,100), the child's lock_range($form, LOCK_EX, 0, 100, timeout => 0) fails with EWOULDBLOCK");
            ok($g->is_locked, "the parent's guard is still locked");
            kernel_is($path, [[LOCK_SH, 0, 1] => 'refused', [LOCK_SH, 99, 1] => 'refused', [LOCK_EX, 100, 1] => 'granted'],
                "the parent's [0,100) is still held in the kernel");
            $g->release;
            $child->say('parent released');
            is($child->hear, 'granted', 'once the parent released, the child gets [0,100)');
            is($child->hear, 'is_locked 1', "the child's guard says is_locked");
            kernel_is($path, [[LOCK_SH, 0, 1] => 'refused', [LOCK_EX, 50, 10] => 'refused', [LOCK_SH, 99, 1] => 'refused'],
                "while the child's guard says is_locked, a third process is refused [0,100)");
            $child->say('done');
            is($child->wait, 0, 'the child exited cleanly');
            kernel_is($path, [[LOCK_EX, 0, 100] => 'granted'], 'after the child exited, [0,100) is free');
        };
    }
}

# ---- 1b. the same in one process: close and reopen under a live guard ------

sub close_reopen_range {
    subtest 'one process: close under a live range guard, reopen onto the same descriptor number' => sub {
        plan skip_all => "classic POSIX locks: the caller's close drops them, as POSIX says" unless $OFD;
        my $path = scratch_file();
        my $fh   = open_rw($path);
        my $fd   = fileno $fh;
        my $g    = lock_range($fh, LOCK_EX, 0, 100) or die "lock_range: $!";
        close $fh;
        my $again = reopen_at($path, $fd);
        is(fileno $again, $fd, "the new open has the old descriptor number $fd");
        my ($g2, $errno) = try_range($again, LOCK_EX, 0, 100, timeout => 0);
        refused_ok($g2, $errno, EWOULDBLOCK, 'lock_range through the new open (another open file description)');
        undef $g2;
        ($g2, $errno) = try_range($again, LOCK_SH, 99, 10, timeout => 0);
        refused_ok($g2, $errno, EWOULDBLOCK, 'LOCK_SH on [99,109) through the new open');
        undef $g2;
        ok($g->is_locked, 'the old guard says is_locked');
        kernel_is($path, [[LOCK_SH, 0, 1] => 'refused', [LOCK_SH, 99, 1] => 'refused', [LOCK_EX, 100, 1] => 'granted'],
            "the old guard's [0,100) is still held");
        $g->release;
        kernel_is($path, [[LOCK_EX, 0, 100] => 'granted'], 'after the old guard is released, [0,100) is free');
        ($g2, $errno) = try_range($again, LOCK_EX, 0, 100, timeout => 0);
        ok(defined $g2, 'now lock_range through the new open is granted') or diag("errno $errno");
        kernel_is($path, [[LOCK_SH, 0, 1] => 'refused', [LOCK_SH, 99, 1] => 'refused'],
            "and the new open's lock is held in the kernel");
    };
}

# ---- 2. guards through dup()ed handles compose -----------------------------

sub dup_composition {
    subtest 'SH [0,20) through $fh and EX [10,30) through a dup: releasing EX leaves [0,20) shared' => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        open(my $d, '>&', $fh) or die "dup: $!";
        my $sh = lock_range($fh, LOCK_SH, 0, 20) or die "lock_range SH: $!";
        my ($ex, $errno) = try_range($d, LOCK_EX, 10, 20, timeout => 0);
        ok(defined $ex, 'EX [10,30) through the dup is granted: one open file description') or diag("errno $errno");
        kernel_is($path, [[LOCK_SH, 0, 10] => 'granted', [LOCK_EX, 0, 10] => 'refused',
                          [LOCK_SH, 10, 1] => 'refused', [LOCK_SH, 29, 1] => 'refused', [LOCK_EX, 30, 1] => 'granted'],
            'with both: [0,10) shared, [10,30) exclusive');
        is($sh->mode, LOCK_SH, 'the SH guard says LOCK_SH');
        is($ex && $ex->mode, LOCK_EX, 'the EX guard says LOCK_EX');
        $ex->release if $ex;
        ok($sh->is_locked, 'the SH guard is still locked');
        is($sh->mode, LOCK_SH, 'the SH guard still says LOCK_SH');
        kernel_is($path, [[LOCK_SH, 0, 20] => 'granted', [LOCK_EX, 10, 10] => 'refused', [LOCK_EX, 0, 1] => 'refused',
                          [LOCK_EX, 19, 1] => 'refused', [LOCK_EX, 20, 10] => 'granted'],
            'EX guard released: [0,20) still shared, bytes 10..19 included, [20,30) free');
        $sh->release;
        kernel_is($path, [[LOCK_EX, 0, 30] => 'granted'], 'both released: [0,30) free');
    };

    subtest 'EX [10,30) through a dup, then SH [0,20) through $fh: releasing SH leaves [10,30) exclusive' => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        open(my $d, '>&', $fh) or die "dup: $!";
        my $ex = lock_range($d, LOCK_EX, 10, 20) or die "lock_range EX: $!";
        my ($sh, $errno) = try_range($fh, LOCK_SH, 0, 20, timeout => 0);
        ok(defined $sh, 'SH [0,20) through $fh is granted') or diag("errno $errno");
        kernel_is($path, [[LOCK_SH, 10, 1] => 'refused', [LOCK_SH, 19, 1] => 'refused', [LOCK_EX, 0, 1] => 'refused',
                          [LOCK_SH, 0, 10] => 'granted'],
            'with both: bytes 10..19 stay exclusive under the newer SH guard, [0,10) shared');
        undef $sh;
        kernel_is($path, [[LOCK_SH, 10, 1] => 'refused', [LOCK_SH, 29, 1] => 'refused', [LOCK_EX, 0, 10] => 'granted'],
            'SH guard gone: [10,30) still exclusive, [0,10) free');
        ok($ex->is_locked, 'the EX guard is still locked');
        is($ex->mode, LOCK_EX, 'and says LOCK_EX');
    };

    subtest 'a range guard through a dup survives the close of the original handle' => sub {
        plan skip_all => "classic POSIX locks: the caller's close drops them, as POSIX says" unless $OFD;
        my $path = scratch_file();
        my $fh   = open_rw($path);
        open(my $d, '>&', $fh) or die "dup: $!";
        my $a = lock_range($fh, LOCK_SH, 0, 10) or die "lock_range: $!";
        my $b = lock_range($d, LOCK_EX, 5, 10) or die "lock_range through the dup: $!";
        close $fh;
        undef $a;
        kernel_is($path, [[LOCK_EX, 0, 5] => 'granted', [LOCK_SH, 5, 10] => 'refused'],
            'original closed and its guard gone: the dup guard keeps [5,15) exclusive, [0,5) free');
        my $other = open_rw($path);
        my ($g, $errno) = try_range($other, LOCK_SH, 14, 1, timeout => 0);
        refused_ok($g, $errno, EWOULDBLOCK, 'a second open in this process is refused byte 14');
    };
}

# ---- 2b. two whole-file guards on one handle -------------------------------

sub lock_file_composition {
    subtest 'two lock_file guards on one handle: EX, then SH' => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        my $ex   = lock_file($fh, LOCK_EX) or die "lock_file EX: $!";
        my ($sh, $errno) = try_lock_file($fh, LOCK_SH, timeout => 0);
        ok(defined $sh, 'a second lock_file(LOCK_SH) on the same handle is granted') or diag("errno $errno");
        is(probe($path, LOCK_SH), 0, 'with both live, the kernel keeps LOCK_EX (another process cannot share)');
        is($ex->mode, LOCK_EX, 'the first guard says LOCK_EX');
        is($sh && $sh->mode, LOCK_SH, 'the second guard says LOCK_SH');
        ok($ex->is_locked && $sh && $sh->is_locked, 'both say is_locked');
        $ex->release;
        ok($sh && $sh->is_locked, 'EX guard released: the SH guard is still locked');
        is(probe($path, LOCK_SH), 1, 'EX guard released: another process can share');
        is(probe($path, LOCK_EX), 0, 'EX guard released: another process cannot take LOCK_EX');
        $sh->release if $sh;
        is(probe($path, LOCK_EX), 1, 'both released: the file is free');
    };

    subtest 'two lock_file guards on one handle: SH, then EX, then EX released' => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        my $sh   = lock_file($fh, LOCK_SH) or die "lock_file SH: $!";
        my ($ex, $errno) = try_lock_file($fh, LOCK_EX, timeout => 0);
        ok(defined $ex, 'lock_file(LOCK_EX) on the same handle is granted') or diag("errno $errno");
        is(probe($path, LOCK_SH), 0, 'with both live, another process cannot share');
        undef $ex;
        ok($sh->is_locked, 'EX guard gone: the SH guard is still locked');
        is($sh->mode, LOCK_SH, 'and says LOCK_SH');
        is(probe($path, LOCK_SH), 1, 'EX guard gone: another process can share');
        is(probe($path, LOCK_EX), 0, 'EX guard gone: the file is still held shared');
    };

    subtest 'lock_file guards through a dup compose; through another open they conflict' => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        open(my $d, '>&', $fh) or die "dup: $!";
        my $sh = lock_file($fh, LOCK_SH) or die "lock_file SH: $!";
        my ($ex, $errno) = try_lock_file($d, LOCK_EX, timeout => 0);
        ok(defined $ex, 'lock_file(LOCK_EX) through the dup is granted') or diag("errno $errno");
        my $other = open_rw($path);
        my ($g, $e2) = try_lock_file($other, LOCK_SH, timeout => 0);
        refused_ok($g, $e2, EWOULDBLOCK, 'lock_file(LOCK_SH) through another open in this process');
        undef $ex;
        is(probe($path, LOCK_SH), 1, 'EX guard through the dup gone: shared again');
        is(probe($path, LOCK_EX), 0, 'and still held');
        ($g, $e2) = try_lock_file($other, LOCK_SH, timeout => 0);
        ok(defined $g, 'now LOCK_SH through the other open is granted') or diag("errno $e2");
    };
}

# ---- 3. closing the caller's handle under a live guard ---------------------

sub close_under_guard {
    subtest "lock_file: closing the caller's handle keeps the lock" => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        my $fd   = fileno $fh;
        my $g    = lock_file($fh, LOCK_EX) or die "lock_file: $!";
        close $fh;
        is(probe($path, LOCK_SH), 0, 'handle closed: another process still cannot take the file');
        ok($g->is_locked, 'is_locked is true');
        my $again = reopen_at($path, $fd);
        is(fileno $again, $fd, "a new open on the old descriptor number $fd");
        my ($g2, $errno) = try_lock_file($again, LOCK_SH, timeout => 0);
        refused_ok($g2, $errno, EWOULDBLOCK, 'lock_file through the new open');
        undef $g2;
        $g->release;
        is(probe($path, LOCK_EX), 1, 'released: the file is free');
        ok(!$g->is_locked, 'is_locked is false');
    };

    subtest "lock_range: closing the caller's handle keeps the lock" => sub {
        plan skip_all => "classic POSIX locks: the caller's close drops them, as POSIX says" unless $OFD;
        my $path = scratch_file();
        my $fh   = open_rw($path);
        my $g    = lock_range($fh, LOCK_SH, 10, 10) or die "lock_range: $!";
        close $fh;
        kernel_is($path, [[LOCK_EX, 10, 1] => 'refused', [LOCK_EX, 19, 1] => 'refused', [LOCK_SH, 10, 10] => 'granted',
                          [LOCK_EX, 0, 10] => 'granted', [LOCK_EX, 20, 0] => 'granted'],
            'handle closed: [10,20) still held shared');
        ok($g->is_locked, 'is_locked is true');
        $g->release;
        kernel_is($path, [[LOCK_EX, 0, 0] => 'granted'], 'released: the file is free');
    };
}

# ---- 4. the off_t edges ----------------------------------------------------

# Python's fcntl.lockf (classic POSIX locks, another process) on single
# bytes at each OFFSET: 'granted' or 'refused' for each.
sub python_bytes {
    my ($path, @offsets) = @_;
    my $script = <<'PY';
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
words = []
for start in sys.argv[2:]:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(start), 0)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, int(start), 0)
        words.append('granted')
    except OSError as e:
        words.append('refused' if e.errno in (errno.EAGAIN, errno.EACCES) else 'error %d' % e.errno)
print(' '.join(words))
PY
    open(my $py, '-|', 'python3', '-c', $script, $path, @offsets) or die "python3: $!";
    my $line = read_line($py, undef, 'python3') // '';
    close $py;
    return $line;
}

sub off_t_edges {
    my $MAX = 9223372036854775807;    # 2**63-1, as an integer
    my $HAVE_PY = in_path('python3');
    # [offset, length, bytes inside, bytes outside]
    my @cases = (
        [$MAX,                 0,  [9223372036854775807],                      [9223372036854775806]],
        [$MAX,                 1,  [9223372036854775807],                      [9223372036854775806]],
        [9223372036854775797,  10, [9223372036854775797, 9223372036854775806], [9223372036854775796, 9223372036854775807]],
    );
    for my $case (@cases) {
        my ($off, $len, $inside, $outside) = @$case;
        subtest "lock_range(FH, LOCK_EX, $off, $len)" => sub {
            my $path = scratch_file();
            my $fh   = open_rw($path);
            my ($g, $errno) = eval { try_range($fh, LOCK_EX, $off, $len) };
            if (!defined $g && $@) {    # bytes that exist are no programmer error
                fail("lock_range(FH, LOCK_EX, $off, $len) croaked: $@");
                return;
            }
            if (!defined $g) {
                is($errno, EINVAL, 'refused: then with EINVAL, never silently');
                kernel_is($path, [map { ([LOCK_EX, $_, 1] => 'granted') } @$inside, @$outside],
                    'refused: nothing is held');
                return;
            }
            pass('granted');
            is($g->offset, $off, "the guard's offset is $off");
            is($g->length, $len, "the guard's length is $len");
            kernel_is($path, [(map { ([LOCK_SH, $_, 1] => 'refused') } @$inside), (map { ([LOCK_EX, $_, 1] => 'granted') } @$outside)],
                'another process is refused exactly those bytes');
            SKIP: {
                skip 'python3 is not installed', 1 unless $HAVE_PY;
                is(python_bytes($path, @$inside, @$outside), join(' ', ('refused') x @$inside, ('granted') x @$outside),
                    "Python's fcntl.lockf agrees on bytes @$inside (held) and @$outside (free)");
            }
            $g->release;
            kernel_is($path, [map { ([LOCK_EX, $_, 1] => 'granted') } @$inside], 'released: those bytes are free');
        };
    }
}

# ---- 6. Storable cannot copy a guard ---------------------------------------

sub storable_copies {
    for my $how ('dclone', 'freeze') {
        subtest "Storable $how of a guard croaks and leaves the original alone" => sub {
            my $path = scratch_file();
            # A separate perl: if a copy frees twice, it is that process that aborts.
            my $script = <<'PERL';
use strict; use warnings;
use Storable ();
use IO::Handle;
use File::Locker qw(:flock lock_file lock_range);
my ($how, $path, $flock_path) = @ARGV;
STDOUT->autoflush(1);
my $range = lock_range($path, LOCK_EX, 0, 10) or die "lock_range: $!";
my $whole = lock_file($flock_path, LOCK_EX) or die "lock_file: $!";
for my $g ($range, $whole) {
    my $copy = eval { $how eq 'dclone' ? Storable::dclone($g) : Storable::thaw(Storable::freeze($g)) };
    (my $err = $@) =~ s/\n/ /g;
    print defined $copy ? "copied\n" : "croaked $err\n";
    undef $copy;
}
print 'locked ', ($range->is_locked ? 1 : 0), ' ', ($whole->is_locked ? 1 : 0), "\n";
my $word = <STDIN>;
undef $range;
undef $whole;
print "released\n";
PERL
            my $flock_path = scratch_file();
            my $pid = open2(my $from, my $to, $^X, (map { "-I$_" } grep { !ref } @INC), '-e', $script, $how, $path, $flock_path);
            $to->autoflush(1);
            for my $kind ('lock_range', 'lock_file') {
                my $line = read_line($from, undef, "the $how child") // 'end of file';
                like($line, qr/^croaked .*File::Locker::Guard/, "$how of a $kind guard croaks naming File::Locker::Guard")
                  or diag("got: $line");
            }
            is(read_line($from, undef, "the $how child") // 'end of file', 'locked 1 1', 'both originals still say is_locked');
            kernel_is($path, [[LOCK_SH, 0, 1] => 'refused', [LOCK_SH, 9, 1] => 'refused', [LOCK_EX, 10, 1] => 'granted'],
                "the range guard's [0,10) is still held");
            is(probe($flock_path, LOCK_SH), 0, "the lock_file guard's lock is still held");
            print {$to} "release\n";
            is(read_line($from, undef, "the $how child") // 'end of file', 'released', 'the child released both');
            close $to;
            waitpid $pid, 0;
            is($?, 0, 'the child exited with status 0 (no abort, no double free)');
            kernel_is($path, [[LOCK_EX, 0, 10] => 'granted'], 'after the child, [0,10) is free');
            is(probe($flock_path, LOCK_EX), 1, 'after the child, the lock file is free');
        };
    }
}

# ---- 5. the classic-lock fallback ------------------------------------------

# A range guard on PATH, then lock_file on the same file in the ways that
# open and close descriptors: the range must stay locked throughout.
sub classic_lock_file_keeps_ranges {
    subtest 'lock_file calls on the same file do not drop the range locks' => sub {
        my $path = scratch_file();
        my $fh   = open_rw($path);
        my $by_path = lock_range($path, LOCK_EX, 0, 10) or die "lock_range PATH: $!";
        my $by_fh   = lock_range($fh, LOCK_SH, 20, 10) or die "lock_range FH: $!";
        my $held = [[LOCK_SH, 0, 1] => 'refused', [LOCK_SH, 9, 1] => 'refused', [LOCK_EX, 20, 1] => 'refused',
                    [LOCK_EX, 29, 1] => 'refused', [LOCK_SH, 20, 10] => 'granted', [LOCK_EX, 10, 10] => 'granted'];
        kernel_is($path, $held, 'to start with: [0,10) exclusive, [20,30) shared');

        my $whole = lock_file($path, LOCK_EX) or die "lock_file PATH: $!";
        kernel_is($path, $held, 'lock_file(PATH) taken: the ranges are still held');
        $whole->release;
        kernel_is($path, $held, 'lock_file(PATH) released: the ranges are still held');

        my $other = open_rw($path);
        my $on_fh = lock_file($other, LOCK_SH) or die "lock_file FH: $!";
        undef $on_fh;
        kernel_is($path, $held, 'lock_file(FH) on another handle taken and released: the ranges are still held');

        my $holder = holder($path, LOCK_EX);
        my ($g, $errno) = try_lock_file($path, LOCK_EX, timeout => 0);
        refused_ok($g, $errno, EWOULDBLOCK, 'lock_file(PATH, timeout => 0) against a flock holder');
        kernel_is($path, $held, 'after the failed lock_file: the ranges are still held');
        ($g, $errno) = try_lock_file($other, LOCK_EX, timeout => 0);
        refused_ok($g, $errno, EWOULDBLOCK, 'lock_file(FH, timeout => 0) against a flock holder');
        kernel_is($path, $held, 'after the failed lock_file(FH): the ranges are still held');
        release_and_wait($holder);
        ok($by_path->is_locked && $by_fh->is_locked, 'both range guards say is_locked');
    };
}

# fork with a range guard; the child takes its own range, then lets its copy
# of the parent's guard go: its own range must stay held.
sub classic_fork_child_keeps_own {
    subtest "a child that lets its copy of the parent's guard go keeps its own range" => sub {
        my $path = scratch_file();
        my $g    = lock_range($path, LOCK_EX, 0, 10) or die "lock_range: $!";
        my $child = spawn(sub {
            my ($parent) = @_;
            my ($mine, $errno) = try_range($path, LOCK_EX, 50, 10, timeout => 0);
            $parent->say(defined $mine ? 'granted' : "refused $errno");
            undef $g;    # the child's copy of the parent's guard
            $parent->say('let go; is_locked ' . ($mine && $mine->is_locked ? 1 : 0));
            $parent->expect('done');
        });
        is($child->hear, 'granted', 'the child takes [50,60) for itself');
        is($child->hear, 'let go; is_locked 1', "the child let its copy go; its own guard says is_locked");
        kernel_is($path, [[LOCK_SH, 50, 1] => 'refused', [LOCK_SH, 59, 1] => 'refused', [LOCK_SH, 0, 1] => 'refused',
                          [LOCK_EX, 10, 40] => 'granted'],
            "a third process is refused the child's [50,60) and the parent's [0,10)");
        ok($g->is_locked, "the parent's guard says is_locked");
        $child->say('done');
        is($child->wait, 0, 'the child exited cleanly');
        kernel_is($path, [[LOCK_EX, 50, 10] => 'granted', [LOCK_SH, 0, 1] => 'refused'],
            "child gone: [50,60) free, the parent's [0,10) still held");
    };
}

# 500 range_conflict(PATH) and 500 failed lock_range(PATH) while ranges are
# held: descriptors stay bounded and every lock stays held.
sub descriptors_bounded {
    subtest 'range_conflict and failed lock_range on PATH keep descriptors bounded' => sub {
        my $path = scratch_file();
        my $mine = lock_range($path, LOCK_EX, 0, 10) or die "lock_range: $!";
        my $other = spawn(sub {
            my ($parent) = @_;
            my $g = lock_range($path, LOCK_EX, 100, 10) or die "lock_range in the child: $!";
            $parent->say('locked');
            $parent->expect('done');
        });
        $other->expect('locked');
        my $before = fd_count();
        my ($conflicts, $refusals, @odd) = (0, 0);
        for (1 .. 500) {
            my $c = range_conflict($path, LOCK_EX, 100, 10);
            $conflicts++ if $c && $c->{mode} == LOCK_EX;
        }
        for (1 .. 500) {
            my ($g, $errno) = try_range($path, LOCK_EX, 100, 10, timeout => 0);
            if (!defined $g && $errno == EWOULDBLOCK) { $refusals++ } else { push @odd, $errno }
        }
        my $after = fd_count();
        is($conflicts, 500, "range_conflict(PATH) saw the other process's lock 500 times");
        is($refusals,  500, 'lock_range(PATH, timeout => 0) was refused with EWOULDBLOCK 500 times')
          or diag("odd outcomes: @odd[0 .. ($#odd < 4 ? $#odd : 4)]");
        cmp_ok($after, '<=', $before + 5, "open descriptors: $before before, $after after (at most 5 more)");
        ok($mine->is_locked, 'our guard says is_locked');
        kernel_is($path, [[LOCK_SH, 0, 1] => 'refused', [LOCK_SH, 9, 1] => 'refused', [LOCK_SH, 100, 1] => 'refused',
                          [LOCK_EX, 10, 90] => 'granted'],
            "ours [0,10) and the other process's [100,110) are still held");
        $other->say('done');
        is($other->wait, 0, 'the other process exited cleanly');
    };
}

# ---- the run -----------------------------------------------------------------

if ($PART eq 'classic') {
    die "LOCKER_OWNERSHIP_PART=classic needs FILE_LOCKER_NO_OFD=1\n" if $OFD;
    run_classic_part();
    done_testing;
    exit;
}

run_general();

if (!$OFD) {
    run_classic_part();
}
else {
    # The fallback is chosen at load time: run that part in a fresh perl.
    rerun_classic_ok('classic fallback', LOCKER_OWNERSHIP_PART => 'classic');
}

done_testing;
