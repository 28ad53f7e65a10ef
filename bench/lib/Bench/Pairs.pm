package Bench::Pairs;

# Uncontended lock+unlock pairs, timed in batches: whole-file locks on an
# open handle, whole-file locks by path, and byte-range locks.

use strict;
use warnings;

use Exporter 'import';
use Fcntl qw(:flock O_RDWR SEEK_SET);
use File::Locker qw(lock_file lock_range);

use Bench::CPairs qw(c_pair);
use Bench::Peers qw(have_peer);
use Bench::Util qw(median paired_ratio time_batches format_table fmt_ratio fmt_time scaled);

our @EXPORT_OK = qw(whole_file_pairs path_pairs range_pairs pairs_table);

our $RANGE_OFFSET = 4096;
our $RANGE_LENGTH = 512;

sub _open_rw {
    my ($path) = @_;
    open(my $fh, '+<', $path) or die "open $path: $!\n";
    return $fh;
}

sub _dir_of {
    my ($path) = @_;
    (my $dir = $path) =~ s{/[^/]*\z}{};
    return length $dir ? $dir : '.';
}

sub _measure {
    my ($bench, $order, $baseline) = @_;
    my $per_op = time_batches(
        bench   => $bench,
        order   => $order,
        rounds  => scaled(15, 5),
        seconds => scaled(0.03, 0.015),
    );
    return { order => $order, per_op => $per_op, baseline => $baseline };
}

# Whole-file LOCK_EX + LOCK_UN on one open handle.
sub whole_file_pairs {
    my ($path) = @_;
    my $fh = _open_rw($path);
    my (%bench, @order);
    my $add = sub { push @order, $_[0]; $bench{ $_[0] } = $_[1] };

    $add->('CORE::flock' => sub {
        for (1 .. $_[0]) {
            CORE::flock($fh, LOCK_EX) or die "flock: $!\n";
            CORE::flock($fh, LOCK_UN) or die "flock: $!\n";
        }
    });
    $add->('File::Locker::flock' => sub {
        for (1 .. $_[0]) {
            File::Locker::flock($fh, LOCK_EX) or die "flock: $!\n";
            File::Locker::flock($fh, LOCK_UN) or die "flock: $!\n";
        }
    });
    $add->('File::Locker::flock, TIMEOUT 10' => sub {
        for (1 .. $_[0]) {
            File::Locker::flock($fh, LOCK_EX, 10) or die "flock: $!\n";
            File::Locker::flock($fh, LOCK_UN) or die "flock: $!\n";
        }
    });
    $add->('lock_file($fh) + release' => sub {
        for (1 .. $_[0]) {
            my $guard = lock_file($fh, LOCK_EX) or die "lock_file: $!\n";
            $guard->release;
        }
    });
    $add->('lock_file($fh) + scope exit' => sub {
        for (1 .. $_[0]) {
            my $guard = lock_file($fh, LOCK_EX) or die "lock_file: $!\n";
        }
    });
    if (my $c = c_pair(_dir_of($path), $path, 'flock')) {
        $add->('C flock(2) pair (cc)' => $c);
    }
    if (my $c = c_pair(_dir_of($path), $path, 'flock-dup')) {
        $add->('C dup + flock(2) pair + close (cc)' => $c);
    }
    if (have_peer('IO::LockedFile')) {
        my $lf = IO::LockedFile->new({ lock => 0 }, ">>$path") or die "IO::LockedFile: $!\n";
        $add->('IO::LockedFile ->lock + ->unlock' => sub {
            for (1 .. $_[0]) {
                $lf->lock or die "IO::LockedFile lock: $!\n";
                $lf->unlock;
            }
        });
    }
    return _measure(\%bench, \@order, 'CORE::flock');
}

# Whole-file lock by path: open, lock, unlock, close.
sub path_pairs {
    my ($path) = @_;
    my (%bench, @order);
    my $add = sub { push @order, $_[0]; $bench{ $_[0] } = $_[1] };

    $add->('sysopen + CORE::flock + close' => sub {
        for (1 .. $_[0]) {
            sysopen(my $f, $path, O_RDWR) or die "open: $!\n";
            CORE::flock($f, LOCK_EX) or die "flock: $!\n";
            CORE::flock($f, LOCK_UN) or die "flock: $!\n";
            close $f;
        }
    });
    $add->('lock_file($path) + release' => sub {
        for (1 .. $_[0]) {
            my $guard = lock_file($path, LOCK_EX) or die "lock_file: $!\n";
            $guard->release;
        }
    });
    if (have_peer('File::Flock')) {
        $add->('File::Flock lock + unlock' => sub {
            for (1 .. $_[0]) {
                File::Flock::lock($path) or die "File::Flock: $!\n";
                File::Flock::unlock($path);
            }
        });
    }
    if (have_peer('File::Flock::Retry')) {
        $add->('File::Flock::Retry lock + release' => sub {
            for (1 .. $_[0]) {
                my $lock = File::Flock::Retry->lock($path);
                $lock->release;
            }
        });
    }
    if (have_peer('LockFile::Simple')) {
        my $locker = LockFile::Simple->make(-delay => 1, -max => 10, -hold => 0,
            -wfunc => undef, -efunc => undef);
        $add->('LockFile::Simple lock + unlock' => sub {
            for (1 .. $_[0]) {
                $locker->lock($path) or die "LockFile::Simple: lock failed\n";
                $locker->unlock($path);
            }
        });
    }
    if (have_peer('IO::LockedFile')) {
        $add->('IO::LockedFile new + close' => sub {
            for (1 .. $_[0]) {
                my $lf = IO::LockedFile->new(">>$path") or die "IO::LockedFile: $!\n";
                $lf->close;
            }
        });
    }
    return _measure(\%bench, \@order, 'sysopen + CORE::flock + close');
}

# The File::FcntlLock flavours that load: XS, then the pure-Perl ones.
sub fcntllock_classes {
    return grep { have_peer($_) } qw(File::FcntlLock File::FcntlLock::Pure File::FcntlLock::Inline);
}

# An F_SETLK F_WRLCK + F_UNLCK pair on one range with a reused object.
sub fcntllock_pair {
    my ($class, $fh, $offset, $length) = @_;
    my $fs = $class->new(l_whence => SEEK_SET, l_start => $offset, l_len => $length);
    my ($setlk, $wrlck, $unlck) = map { File::FcntlLock->can($_)->() } qw(F_SETLK F_WRLCK F_UNLCK);
    return sub {
        for (1 .. $_[0]) {
            $fs->l_type($wrlck);
            $fs->lock($fh, $setlk) or die "$class lock: $!\n";
            $fs->l_type($unlck);
            $fs->lock($fh, $setlk) or die "$class unlock: $!\n";
        }
    };
}

# Byte-range LOCK_EX + unlock of [OFFSET, OFFSET+LENGTH) on one handle.
sub range_pairs {
    my ($path) = @_;
    my $fh = _open_rw($path);
    my ($offset, $length) = ($RANGE_OFFSET, $RANGE_LENGTH);
    my (%bench, @order);
    my $add = sub { push @order, $_[0]; $bench{ $_[0] } = $_[1] };

    $add->('lock_range($fh) + release' => sub {
        for (1 .. $_[0]) {
            my $guard = lock_range($fh, LOCK_EX, $offset, $length) or die "lock_range: $!\n";
            $guard->release;
        }
    });
    $add->('lock_range($fh) + scope exit' => sub {
        for (1 .. $_[0]) {
            my $guard = lock_range($fh, LOCK_EX, $offset, $length) or die "lock_range: $!\n";
        }
    });
    my @classes = fcntllock_classes();
    $add->("$_ F_SETLK pair" => fcntllock_pair($_, $fh, $offset, $length)) for @classes;
    my $baseline = @classes && $classes[0] eq 'File::FcntlLock' ? 'File::FcntlLock F_SETLK pair' : undef;
    if (my $c = c_pair(_dir_of($path), $path, 'ofd', $offset, $length)) {
        $add->('C F_OFD_SETLK pair (cc)' => $c);
        $baseline = 'C F_OFD_SETLK pair (cc)';
    }
    if (my $c = c_pair(_dir_of($path), $path, 'ofd-dup', $offset, $length)) {
        $add->('C dup + F_OFD_SETLK pair + close (cc)' => $c);
    }
    return _measure(\%bench, \@order, $baseline);
}

# Table of per-pair medians, ratios to the baseline and the round spread.
sub pairs_table {
    my ($title, $result) = @_;
    my $base = $result->{baseline} && $result->{per_op}{ $result->{baseline} };
    my @rows;
    for my $name (@{ $result->{order} }) {
        my @times = @{ $result->{per_op}{$name} };
        my $med = median(@times);
        my ($lo, $hi) = (sort { $a <=> $b } @times)[0, -1];
        push @rows, [ $name, fmt_time($med), fmt_ratio($base ? paired_ratio(\@times, $base) : undef),
            fmt_time($lo) . ' .. ' . fmt_time($hi) ];
    }
    my $rounds = @{ $result->{per_op}{ $result->{order}[0] } };
    my $ratio = $result->{baseline} ? "; ratio: median per-round ratio to $result->{baseline}" : '';
    return format_table("$title\n(process CPU time, median of $rounds rounds$ratio)",
        [ 'variant', 'per pair', 'ratio', 'round min .. max' ], @rows);
}

1;
