package Bench::RangeTable;

# Range-table scaling: the cost of one more LOCK_EX + unlock pair on a file
# on which this process already holds K one-byte ranges (bytes 2i, so no
# two touch). File::Locker holds them as K lock_range guards on one handle,
# File::FcntlLock as K F_SETLK locks on another file in the same state.

use strict;
use warnings;

use Exporter 'import';
use Fcntl qw(:flock SEEK_SET);
use File::Locker qw(lock_range);

use Bench::Pairs ();
use Bench::Util qw(now scaled time_batches);

our @EXPORT_OK = qw(run_range_table);

# Takes K ranges on the locker file (lock_range guards) and on the fcntl
# file (F_SETLK), times one more pair on each in interleaved rounds, then
# lets go of everything. Returns per-round times and the time taken to
# build each state.
sub _one_state {
    my ($locker_path, $fcntl_path, $held, $fcntl_first) = @_;
    open(my $lfh, '+<', $locker_path) or die "open $locker_path: $!\n";
    open(my $ffh, '+<', $fcntl_path)  or die "open $fcntl_path: $!\n";
    my $fs = File::FcntlLock->new(l_whence => SEEK_SET, l_len => 1);
    my ($setlk, $wrlck, $unlck) = (File::FcntlLock::F_SETLK(), File::FcntlLock::F_WRLCK(),
        File::FcntlLock::F_UNLCK());

    my (%build, @guards);
    my %take = (
        locker => sub {
            @guards = map { lock_range($lfh, LOCK_EX, 2 * $_, 1) or die "lock_range: $!\n" }
              0 .. $held - 1;
        },
        fcntl => sub {
            $fs->l_type($wrlck);
            for my $i (0 .. $held - 1) {
                $fs->l_start(2 * $i);
                $fs->lock($ffh, $setlk) or die "F_SETLK: $!\n";
            }
        },
    );
    for my $side ($fcntl_first ? qw(fcntl locker) : qw(locker fcntl)) {
        my $t = now();
        $take{$side}->();
        $build{$side} = now() - $t;
    }

    my $offset = 2 * $held;
    my %bench = (
        'lock_range' => sub {
            for (1 .. $_[0]) {
                my $guard = lock_range($lfh, LOCK_EX, $offset, 1) or die "lock_range: $!\n";
                $guard->release;
            }
        },
        'File::FcntlLock' => Bench::Pairs::fcntllock_pair('File::FcntlLock', $ffh, $offset, 1),
    );
    my $per_op = time_batches(
        bench   => \%bench,
        order   => [ 'lock_range', 'File::FcntlLock' ],
        rounds  => scaled(5, 5),
        seconds => scaled(0.04, 0.012),
    );

    @guards = ();
    $fs->l_type($unlck);
    $fs->l_start(0);
    $fs->l_len(0);
    $fs->lock($ffh, $setlk) or die "F_UNLCK: $!\n";
    return ($per_op, \%build);
}

# The kernel keeps a file's locks in a list, so with thousands held the
# cost depends on where its entries landed in memory: the state is built
# afresh several times, in alternating order. Returns { per_op => {name =>
# [per round, all builds]}, build => {side => average seconds per build} }.
sub run_range_table {
    my ($locker_path, $fcntl_path, $held) = @_;
    my $builds = scaled(3, 1);
    my (%per_op, %build);
    for my $b (0 .. $builds - 1) {
        my ($times, $took) = _one_state($locker_path, $fcntl_path, $held, $b % 2);
        push @{ $per_op{$_} }, @{ $times->{$_} } for keys %$times;
        $build{$_} += $took->{$_} / $builds for keys %$took;
    }
    return { per_op => \%per_op, build => \%build };
}

1;
