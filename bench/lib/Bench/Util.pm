package Bench::Util;

# Shared helpers: the clock, statistics, batch timing, scale settings and
# plain-text tables.

use strict;
use warnings;

use Exporter 'import';
use List::Util qw(max sum);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC CLOCK_PROCESS_CPUTIME_ID);

our @EXPORT_OK = qw(now cpu_now quick scaled median percentile paired_ratio time_batches
  format_table fmt_ratio fmt_time);

# Seconds on the monotonic clock, shared by all processes of the machine.
sub now { clock_gettime(CLOCK_MONOTONIC) }

# Seconds of CPU (user + system) this process has used: what a loop costs,
# whatever else the machine runs meanwhile.
sub cpu_now { clock_gettime(CLOCK_PROCESS_CPUTIME_ID) }

sub quick { $ENV{BENCH_QUICK} ? 1 : 0 }

# The default value, or the quick one under BENCH_QUICK=1.
sub scaled {
    my ($default, $quick) = @_;
    return quick() ? $quick : $default;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return undef unless @s;
    my $mid = int(@s / 2);
    return @s % 2 ? $s[$mid] : ($s[$mid - 1] + $s[$mid]) / 2;
}

# Median of the per-round ratios A[i] / B[i] of two series measured in the
# same rounds: slow drift of the machine affects both sides of each ratio.
sub paired_ratio {
    my ($a, $b) = @_;
    return median(map { $a->[$_] / $b->[$_] } 0 .. $#$a);
}

# Nearest-rank percentile, P in (0, 100].
sub percentile {
    my ($p, @values) = @_;
    my @s = sort { $a <=> $b } @values;
    return undef unless @s;
    my $rank = int($p / 100 * @s + 0.999999);
    $rank = 1 if $rank < 1;
    return $s[$rank - 1];
}

# Runs each code ref in %$bench (called with a repeat count, doing that many
# operations) in ROUNDS interleaved rounds, the order rotating each round,
# and measures the process CPU time each batch takes. A code ref that runs
# its work in another process returns the CPU seconds that process spent on
# the batch, which is used instead. A calibration first sizes each batch to
# about SECONDS. Returns { name => [CPU seconds per operation, one per
# round] }.
sub time_batches {
    my (%args) = @_;
    my ($bench, $order, $rounds, $seconds) = @args{qw(bench order rounds seconds)};
    my %count;
    for my $name (@$order) {
        my $n = 8;
        while (1) {
            my $elapsed = _cpu_of($bench->{$name}, $n);
            if ($elapsed >= $seconds / 8 || $n >= 1 << 26) {
                $count{$name} = max(1, int($n * $seconds / ($elapsed || 1e-9)));
                last;
            }
            $n *= 4;
        }
    }
    my %per_op;
    for my $round (0 .. $rounds - 1) {
        my @names = @$order;
        push @names, splice(@names, 0, $round % @names);
        for my $name (@names) {
            my $n = $count{$name};
            push @{ $per_op{$name} }, _cpu_of($bench->{$name}, $n) / $n;
        }
    }
    return \%per_op;
}

# CPU seconds of one batch of N: the code's own answer, or this process's.
sub _cpu_of {
    my ($code, $n) = @_;
    my $t = cpu_now();
    my $theirs = $code->($n);
    my $ours = cpu_now() - $t;
    return defined $theirs && $theirs =~ /\A[0-9.eE+-]+\z/ ? $theirs : $ours;
}

sub fmt_ratio {
    my ($r) = @_;
    return '-' unless defined $r;
    return sprintf($r >= 100 ? '%.0fx' : '%.2fx', $r);
}

# A duration in seconds as ns, us, ms or s with three significant digits.
sub fmt_time {
    my ($s) = @_;
    return '-' unless defined $s;
    my ($v, $unit) =
        $s < 1e-6 ? ($s * 1e9, 'ns')
      : $s < 1e-3 ? ($s * 1e6, 'us')
      : $s < 1    ? ($s * 1e3, 'ms')
      :             ($s, 's');
    my $digits = $v >= 100 ? 0 : $v >= 10 ? 1 : 2;
    return sprintf("%.${digits}f %s", $v, $unit);
}

# A table with a title, a header row and data rows; the first column is
# left-aligned, the others right-aligned.
sub format_table {
    my ($title, $header, @rows) = @_;
    my @width;
    for my $row ($header, @rows) {
        for my $i (0 .. $#$row) {
            my $len = length($row->[$i] // '');
            $width[$i] = $len if !defined $width[$i] || $len > $width[$i];
        }
    }
    my $line = sub {
        my ($row) = @_;
        my @cells = map {
            my $cell = $row->[$_] // '';
            $_ == 0 ? sprintf('%-*s', $width[$_], $cell) : sprintf('%*s', $width[$_], $cell)
        } 0 .. $#width;
        return join('  ', @cells) =~ s/\s+$//r . "\n";
    };
    my $rule = '-' x (sum(@width) + 2 * $#width) . "\n";
    return "$title\n" . $line->($header) . $rule . join('', map { $line->($_) } @rows) . "\n";
}

1;
