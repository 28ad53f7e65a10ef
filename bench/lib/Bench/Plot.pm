package Bench::Plot;

# Plots hand-off latency distributions (cumulative, log-scaled time axis)
# to a PNG with gnuplot. Without gnuplot it returns a note instead.

use strict;
use warnings;

use Exporter 'import';
use File::Spec;

our @EXPORT_OK = qw(plot_handoffs);

sub _have_gnuplot {
    for my $dir (File::Spec->path) {
        return 1 if -x File::Spec->catfile($dir, 'gnuplot');
    }
    return 0;
}

# SERIES: [ [name, [latencies in seconds]], ... ]. Writes OUT_DIR/handoff.png
# (and its data and script beside it). Returns (png path, undef) or
# (undef, note).
sub plot_handoffs {
    my ($out_dir, $title, @series) = @_;
    return (undef, 'no plot: gnuplot not found (bench/setup installs gnuplot-nox)')
      unless _have_gnuplot();
    mkdir $out_dir or die "mkdir $out_dir: $!\n" unless -d $out_dir;

    my @colours = ('#000000', '#1f77b4', '#2ca02c', '#ff7f0e', '#d62728', '#9467bd', '#8c564b', '#7f7f7f');
    my @plots;
    for my $i (0 .. $#series) {
        my ($name, $latencies) = @{ $series[$i] };
        my @sorted = sort { $a <=> $b } @$latencies;
        next unless @sorted;
        my $data = "$out_dir/handoff-$i.dat";
        open(my $fh, '>', $data) or die "open $data: $!\n";
        printf {$fh} "%.3f %.5f\n", $sorted[$_] * 1e6, ($_ + 1) / @sorted for 0 .. $#sorted;
        close $fh or die "write $data: $!\n";
        (my $label = "$name (n=" . @sorted . ')') =~ s/'/''/g;
        my $style = @sorted < 50 ? 'steps lw 2' : 'lines lw 2';
        my $colour = $colours[ $i % @colours ];
        push @plots, "'handoff-$i.dat' using 1:2 with $style lc rgb '$colour' title '$label'";
    }
    my $us = "\xc2\xb5s";                 # "microseconds", UTF-8 encoded
    (my $quoted_title = $title) =~ s/'/''/g;
    my $script = <<"GP";
set encoding utf8
set terminal pngcairo noenhanced size 1100,650 font 'Sans,11'
set output 'handoff.png'
set title '$quoted_title'
set xlabel 'latency from the holder''s unlock call to the return of the waiter''s lock call (log scale)'
set ylabel 'fraction of hand-offs at or below this latency'
set logscale x
set offsets graph 0.02, graph 0.04, 0, 0
set xtics ('1 ${us}' 1, '10 ${us}' 10, '100 ${us}' 100, '1 ms' 1e3, '10 ms' 1e4, '100 ms' 1e5, '1 s' 1e6, '10 s' 1e7)
set yrange [0:1.02]
set ytics 0.1
set grid xtics ytics mxtics
set key center center box opaque
plot @{[ join(", \\\n     ", @plots) ]}
GP
    my $gp = "$out_dir/handoff.gp";
    open(my $fh, '>', $gp) or die "open $gp: $!\n";
    print {$fh} $script;
    close $fh or die "write $gp: $!\n";

    my $status = system('sh', '-c', 'cd "$1" && gnuplot handoff.gp', 'sh', $out_dir);
    return (undef, 'no plot: gnuplot failed') if $status != 0;
    return ("$out_dir/handoff.png", undef);
}

1;
