#!perl
# Stress: many processes take lock_file(PATH, LOCK_EX, unlink => 1) over and
# over while the file is removed at every release and created anew by the
# next taker. Mutual exclusion must hold throughout: an occupancy marker that
# each exclusive holder sets to its pid and clears again is never found set
# by another holder, no increment of a shared counter is lost, and a few
# LOCK_SH takers (also unlink => 1) never see an exclusive holder at work.
# At the end the lock file is gone.
#
# Sizes: LOCKER_STRESS_PROCS writers (default 8), LOCKER_STRESS_ITERS
# iterations each (default 200), LOCKER_STRESS_READERS shared takers
# (default 2, as many iterations).
use strict;
use warnings;

use Test::More;
use POSIX ();
use Time::HiRes ();
use lib 't/lib';
use LockerTest qw(spawn scratch_dir scratch_file open_rw);
use File::Locker qw(:flock lock_file);

my $WRITERS = $ENV{LOCKER_STRESS_PROCS}   || 8;
my $ITERS   = $ENV{LOCKER_STRESS_ITERS}   || 200;
my $READERS = $ENV{LOCKER_STRESS_READERS} // 2;
my $TOTAL   = $WRITERS * $ITERS;

note "stress sizes: $WRITERS writers x $ITERS iterations, $READERS shared readers x $ITERS iterations";

my $path      = scratch_dir() . '/stress.lock';    # created by the first taker
my $occupancy = scratch_file('occupancy');          # data files, not lock files
my $counter   = scratch_file('counter');

# Numbers live at offset 0 of a data file as fixed-width decimal text.
my $WIDTH = 20;

sub read_number {
    my ($fh) = @_;
    sysseek($fh, 0, 0) or die "seek: $!";
    my $got = sysread($fh, my $buf, $WIDTH);
    die "read: $!" unless defined $got;
    return 0 if $got == 0;
    die "short read ($got bytes)" unless $got == $WIDTH;
    $buf =~ /^\s*(\d+)$/ or die "garbage in data file: '$buf'";
    return $1;
}

sub write_number {
    my ($fh, $n) = @_;
    sysseek($fh, 0, 0) or die "seek: $!";
    my $put = syswrite($fh, sprintf("%${WIDTH}d", $n));
    die "write: $!" unless defined $put && $put == $WIDTH;
}

for my $file ($occupancy, $counter) {
    my $fh = open_rw($file);
    write_number($fh, 0);
    close $fh;
}

# True when PATH names the inode the guard has locked: with unlink => 1 only a
# holder removes the file, so while one holds it, it must be there.
sub path_names_locked_inode {
    my ($g) = @_;
    my @on_path = lstat $path or return 0;
    my @locked  = stat $g->fh or die "stat of the locked handle: $!";
    return $on_path[0] == $locked[0] && $on_path[1] == $locked[1];
}

# Each worker opens its own data handles (a shared file offset would mix up
# the readers), says "ready", waits for "go" so that all start together, and
# reports "done ITERATIONS violations N" with the details of the first few.
sub worker {
    my ($role) = @_;
    return spawn(sub {
        my ($parent) = @_;
        my $occ = open_rw($occupancy);
        my $cnt = open_rw($counter);
        my ($done, $violations, $last_count, @what) = (0, 0, 0);
        my $violation = sub { $violations++; push @what, $_[0] if @what < 3 };
        $parent->say('ready');
        $parent->expect('go');
        for my $i (1 .. $ITERS) {
            my $mode = $role eq 'writer' ? LOCK_EX : LOCK_SH;
            my $g    = lock_file($path, $mode, unlink => 1) or die "lock_file: $!";
            $violation->("iteration $i: lock file not at PATH") unless path_names_locked_inode($g);
            my $seen = read_number($occ);
            $violation->("iteration $i: occupied by $seen") if $seen != 0;
            if ($role eq 'writer') {
                write_number($occ, $$);
                my $n = read_number($cnt);    # the work: a read-modify-write
                write_number($cnt, $n + 1);
                my $back = read_number($occ);
                $violation->("iteration $i: occupancy became $back") if $back != $$;
                write_number($occ, 0);
            }
            else {
                my $n = read_number($cnt);
                $violation->("iteration $i: counter went from $last_count to $n")
                  if $n < $last_count || $n > $TOTAL;
                $last_count = $n;
            }
            $g->release or die "release: $!";
            $done++;
        }
        $parent->say("done $done violations $violations");
        $parent->say("violation: $_") for @what;
        $parent->say('end');
    });
}

my @workers = ((map { [ writer => worker('writer') ] } 1 .. $WRITERS),
               (map { [ reader => worker('reader') ] } 1 .. $READERS));
is($_->[1]->hear, 'ready', "$_->[0] " . $_->[1]->pid . ' is ready') for @workers;
my $t0 = Time::HiRes::time();
$_->[1]->say('go') for @workers;

for my $w (@workers) {
    my ($role, $peer) = @$w;
    my $label = "$role " . $peer->pid;
    is($peer->hear, "done $ITERS violations 0", "$label: $ITERS iterations, no violation");
    while (defined(my $line = $peer->hear)) {
        last if $line eq 'end';
        diag "$label: $line";
    }
    is($peer->wait, 0, "$label: exited cleanly");
}
note sprintf 'stress run took %.2f s', Time::HiRes::time() - $t0;

{
    my $fh = open_rw($counter);
    is(read_number($fh), $TOTAL, "the counter is exactly $WRITERS x $ITERS: no increment was lost");
    close $fh;
    $fh = open_rw($occupancy);
    is(read_number($fh), 0, 'the occupancy marker is clear');
    close $fh;
}
ok(!-e $path, 'the lock file is gone once every holder has released');

done_testing;
