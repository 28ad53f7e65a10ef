#!/usr/bin/env perl
# Benchmarks File::Locker against CORE::flock and peer modules, and checks
# the performance targets. A report: exits 0 whether targets are met or not,
# non-zero only if something breaks.
#
#   perl -Mblib bench/run.pl [SECTION...]     (from the distribution root)
#
# Sections: pairs ranges handoff contention table startup (default: all of
# these), and callgrind: instructions per pair counted by valgrind, which a
# loaded machine does not move (run only when named).
# BENCH_QUICK=1 runs a shorter version. Writes bench/out/handoff.png. With
# LOCKER_TEST_DIRS=A:B (two mounts of one volume) it then runs
# bench/cross_client.pl: cost and hand-off across the two mounts.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Locker ();
use File::Temp qw(tempdir);
use POSIX ();

use Bench::Callgrind qw(have_callgrind callgrind_table);
use Bench::Contention qw(contention_variants run_contention);
use Bench::Handoff qw(handoff_variants run_handoffs);
use Bench::Pairs qw(whole_file_pairs path_pairs range_pairs pairs_table);
use Bench::Peers qw(have_peer peer_notes peer_versions);
use Bench::Plot qw(plot_handoffs);
use Bench::RangeTable qw(run_range_table);
use Bench::Startup qw(startup_variants run_startup);
use Bench::Util qw(now quick scaled median percentile paired_ratio format_table fmt_ratio fmt_time);

$| = 1;
my @sections = qw(pairs ranges handoff contention table startup);
my %run = map { $_ => 1 } @ARGV ? @ARGV : @sections;
for my $name (keys %run) {
    die "unknown section '$name' (sections: @sections callgrind)\n"
      unless grep { $_ eq $name } @sections, 'callgrind';
}

my $dir     = tempdir('file-locker-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);
$SIG{INT} = $SIG{TERM} = sub { die "interrupted\n" };    # so the temp dir goes too
my $out_dir = "$FindBin::Bin/out";
my $started = now();
my (%ratio, @notes);
# For the guard targets: [the C floor's ratio to the target's baseline, the
# guard's ratio to that floor]. The floor is the pair on a close-on-exec
# duplicate made and closed around it, which DESIGN's Ownership requires of
# a guard on a caller's handle.
my %floor;

# A lock file with content, so that peers that remove empty lock files at
# release (File::Flock::Retry) keep it.
sub lock_file_path {
    my ($name) = @_;
    my $path = "$dir/$name";
    open(my $fh, '>', $path) or die "open $path: $!\n";
    print {$fh} "lock\n";
    close $fh or die "write $path: $!\n";
    return $path;
}

# Median per-round ratio of variant A to variant B in one pairs result.
sub ratio_of {
    my ($result, $a, $b) = @_;
    return paired_ratio($result->{per_op}{$a}, $result->{per_op}{$b});
}

print machine_header();

if ($run{pairs}) {
    my $fh_pairs = whole_file_pairs(lock_file_path('pairs'));
    print pairs_table('Whole-file LOCK_EX + unlock on an open handle', $fh_pairs);
    $ratio{flock_pair}     = ratio_of($fh_pairs, 'File::Locker::flock', 'CORE::flock');
    $ratio{lock_file_pair} = ratio_of($fh_pairs, 'lock_file($fh) + scope exit', 'CORE::flock');
    my $floor = 'C dup + flock(2) pair + close (cc)';
    if ($fh_pairs->{per_op}{$floor}) {
        $floor{lock_file_pair} = [ ratio_of($fh_pairs, $floor, 'CORE::flock'),
            ratio_of($fh_pairs, 'lock_file($fh) + scope exit', $floor) ];
    }

    my $by_path = path_pairs(lock_file_path('by-path'));
    print pairs_table('Whole-file lock by path: open + LOCK_EX + unlock + close', $by_path);
}

if ($run{ranges}) {
    my $ranges = range_pairs(lock_file_path('ranges'));
    print pairs_table("Byte-range exclusive lock + unlock of $Bench::Pairs::RANGE_LENGTH bytes"
          . " at offset $Bench::Pairs::RANGE_OFFSET", $ranges);
    $ratio{lock_range_pair} = ratio_of($ranges, 'lock_range($fh) + scope exit', $ranges->{baseline})
      if $ranges->{baseline} && $ranges->{baseline} =~ /^C /;
    my $floor = 'C dup + F_OFD_SETLK pair + close (cc)';
    if ($ranges->{per_op}{$floor} && $ratio{lock_range_pair}) {
        $floor{lock_range_pair} = [ ratio_of($ranges, $floor, $ranges->{baseline}),
            ratio_of($ranges, 'lock_range($fh) + scope exit', $floor) ];
    }
}

if ($run{handoff}) {
    my $path     = lock_file_path('handoff');
    my @variants = handoff_variants();
    my @kernel   = grep { $_->{kernel} } @variants;
    my @polling  = grep { !$_->{kernel} } @variants;
    my $rounds   = scaled(20, 10);
    my $per      = int(scaled(2000, 500) / $rounds);
    my (%latency, %round_medians);
    for my $round (0 .. $rounds - 1) {
        my @order = @kernel;
        push @order, splice(@order, 0, $round % @order);
        for my $v (@order) {
            my $lat = run_handoffs($v, $path, $per);
            push @{ $latency{ $v->{name} } }, @$lat;
            push @{ $round_medians{ $v->{name} } }, median(@$lat);
        }
    }
    for my $v (@polling) {
        my $lat = run_handoffs($v, $path, scaled(8, 4));
        $latency{ $v->{name} }       = $lat;
        $round_medians{ $v->{name} } = [ median(@$lat) ];
    }
    my $core = median(@{ $latency{'CORE::flock'} });
    my @rows;
    for my $v (@variants) {
        my @lat = @{ $latency{ $v->{name} } };
        my @rm  = sort { $a <=> $b } @{ $round_medians{ $v->{name} } };
        push @rows, [ $v->{name}, scalar @lat, fmt_time(median(@lat)), fmt_time(percentile(99, @lat)),
            fmt_ratio(median(@lat) / $core), @rm > 1 ? fmt_time($rm[0]) . ' .. ' . fmt_time($rm[-1]) : '-' ];
    }
    print format_table('Hand-off latency between two processes: holder calls unlock -> waiter\'s lock'
          . " call returns\n(kernel-blocking variants: $rounds rounds of $per, pooled; polling peers: one"
          . ' round; ratio: median to median of CORE::flock; p99 is the maximum when n < 100)',
        [ 'variant', 'n', 'median', 'p99', 'ratio', 'round medians min .. max' ], @rows);
    $ratio{handoff_timeout} = median(@{ $latency{'File::Locker::flock, TIMEOUT 10'} }) / $core;
    $ratio{handoff_async}   = paired_ratio($round_medians{'lock_file_async($fh), timeout 10'},
        $round_medians{'lock_file($fh), timeout 10'});

    my ($png, $note) = plot_handoffs($out_dir, 'Lock hand-off latency between two processes'
          . ' (cumulative distribution)', map { [ $_->{name}, $latency{ $_->{name} } ] } @variants);
    if   ($png) { print "plot: bench/out/handoff.png\n\n" }
    else        { push @notes, $note }
}

if ($run{contention}) {
    my $path     = "$dir/counter";
    my @variants = contention_variants();
    my @procs    = (1, 2, 4, 8);
    my $rounds   = scaled(5, 2);
    my $seconds  = scaled(0.3, 0.15);
    my %rate;
    for my $round (0 .. $rounds - 1) {
        for my $n (@procs) {
            my @order = @variants;
            push @order, splice(@order, 0, $round % @order);
            for my $v (@order) {
                my ($rate, $exact) = run_contention($v->[1], $path, $n, $seconds);
                die "contention: lost updates with $v->[0] and $n processes\n" unless $exact;
                push @{ $rate{ $v->[0] }{$n} }, $rate;
            }
        }
    }
    my @rows;
    for my $v (@variants) {
        push @rows, [ $v->[0], map {
            my $rates = $rate{ $v->[0] }{$_};
            sprintf('%.0fk/s %s', median(@$rates) / 1000,
                fmt_ratio(paired_ratio($rates, $rate{'CORE::flock'}{$_})))
        } @procs ];
    }
    print format_table("Contention: N processes increment a counter file under one lock\n"
          . "(${seconds} s x $rounds rounds: median increments/s; ratio: median per-round ratio to CORE::flock;"
          . " counter checked exact)",
        [ 'variant', map { "N=$_" } @procs ], @rows);
}

if ($run{table}) {
    if (have_peer('File::FcntlLock')) {
        my @rows;
        for my $held (0, 100, 1_000, 10_000) {
            my $r = run_range_table(lock_file_path("table-locker-$held"),
                lock_file_path("table-fcntl-$held"), $held);
            my ($locker, $fcntl) = @{ $r->{per_op} }{ 'lock_range', 'File::FcntlLock' };
            my $ratio = paired_ratio($locker, $fcntl);
            push @rows, [ $held, fmt_time(median(@$locker)), fmt_time(median(@$fcntl)), fmt_ratio($ratio),
                $held ? fmt_time($r->{build}{locker} / $held) : '-',
                $held ? fmt_time($r->{build}{fcntl} / $held)  : '-' ];
            $ratio{range_table} = $ratio if $held == 10_000;
        }
        my $builds = scaled(3, 1);
        print format_table('Range table: one more exclusive lock + unlock of 1 byte with K'
              . " one-byte ranges already held on the file\n($builds fresh builds of each state x 5"
              . ' rounds: median; ratio: median per-round ratio; "to hold": average time per lock'
              . ' while taking the K ranges)',
            [ 'K held', 'lock_range pair', 'File::FcntlLock pair', 'ratio',
              'lock_range to hold (avg)', 'F_SETLK to hold (avg)' ], @rows);
    }
}

if ($run{startup}) {
    my ($variants, $note) = startup_variants($dir, "$FindBin::Bin/../bin/locker", lock_file_path('startup'));
    if ($variants) {
        my $rounds = scaled(15, 5);
        my $runs   = scaled(20, 8);
        my ($times, $cpu) = run_startup($variants, $rounds, $runs);
        my $flock     = $times->{ $variants->[0][0] };
        my $flock_cpu = median(@{ $cpu->{ $variants->[0][0] } });
        my @rows      = map {
            my ($t, $c) = ($times->{ $_->[0] }, $cpu->{ $_->[0] });
            [ $_->[0], fmt_time(median(@$t)), fmt_ratio(paired_ratio($t, $flock)), fmt_time(median(@$c)),
              $flock_cpu > 0 ? fmt_ratio(median(@$c) / $flock_cpu) : '-' ]
        } @$variants;
        print format_table("Start-up: a whole command on a free lock, fork to exit\n($rounds interleaved"
              . " rounds of $runs runs each: median of the rounds' means; ratio: median per-round ratio"
              . ' to flock(1); CPU: user + system time, a ratio of medians, less inflated by a loaded'
              . ' machine; locker runs from an installed-layout copy of the build)',
            [ 'command', 'time', 'ratio', 'CPU', 'CPU ratio' ], @rows);
        $ratio{startup} = paired_ratio($times->{ $variants->[1][0] }, $flock);
        $ratio{load} = paired_ratio($times->{'perl -MFile::Locker -e1'}, $times->{'perl -MFcntl -e1'});
    }
    else {
        push @notes, $note;
    }
}

if ($run{callgrind}) {
    if (have_callgrind()) {
        my ($text) = callgrind_table($dir, lock_file_path('callgrind'));
        print $text // "callgrind: cannot find the built File::Locker (run make first)\n\n";
    }
    else {
        push @notes, 'skipped callgrind: valgrind is not installed';
    }
}

print summary();
# Across two mounts of a shared filesystem, when the user names them.
if ($ENV{LOCKER_TEST_DIRS}) {
    local $ENV{PERL5LIB} = join ':', @INC;    # the File::Locker this run uses
    system $^X, "$FindBin::Bin/cross_client.pl";
}
exit 0;

sub machine_header {
    my $cpu = '?';
    if (open(my $fh, '<', '/proc/cpuinfo')) {
        while (<$fh>) { if (/^model name\s*:\s*(.*)/) { $cpu = $1; last } }
    }
    my $cpus = `nproc 2>/dev/null` || '?';
    chomp $cpus;
    my $fs = `stat -f -c %T "$dir" 2>/dev/null` || '?';
    chomp $fs;
    have_peer($_) for qw(File::Flock File::Flock::Retry LockFile::Simple IO::LockedFile
      File::FcntlLock File::FcntlLock::Pure File::FcntlLock::Inline);
    return "File::Locker $File::Locker::VERSION benchmark" . (quick() ? ' (BENCH_QUICK=1)' : '') . "\n"
      . "machine: nproc $cpus, kernel " . (POSIX::uname())[2] . ", perl $^V, CPU $cpu\n"
      . "lock files on: $fs; load average at start: " . load_average() . "\n"
      . 'peers: ' . (join(', ', peer_versions()) || 'none') . "\n\n";
}

# The 1, 5 and 15 minute load averages: other work on the machine skews
# every number here.
sub load_average {
    open(my $fh, '<', '/proc/loadavg') or return '?';
    my @load = split ' ', scalar <$fh>;
    return "@load[0 .. 2]";
}

sub summary {
    my @targets = (    # name, key in %ratio, limit, section
        [ 'File::Locker::flock pair vs CORE::flock pair', 'flock_pair', 1.00, 'pairs' ],
        [ 'lock_file($fh) + scope exit vs CORE::flock pair', 'lock_file_pair', 1.30, 'pairs' ],
        [ 'lock_range($fh, EX, 4096, 512) + scope exit vs C F_OFD_SETLK pair', 'lock_range_pair', 1.60,
          'ranges' ],
        [ 'hand-off with TIMEOUT vs blocking CORE::flock (median)', 'handoff_timeout', 1.10, 'handoff' ],
        [ 'async hand-off (lock_file_async + select) vs blocking lock_file (median per round)',
          'handoff_async', 1.5, 'handoff' ],
        [ 'perl -MFile::Locker -e1 vs perl -MFcntl -e1 (start-up)', 'load', 1.50, 'startup' ],
        [ 'one more range with 10,000 held vs File::FcntlLock in the same state', 'range_table', 1.15,
          'table' ],
        [ 'locker -n FILE true vs flock -n FILE true (start-up)', 'startup', 3.0, 'startup' ],
    );
    my $text = "Summary\n-------\n";
    for my $t (@targets) {
        my ($name, $key, $limit, $section) = @$t;
        my $r = $ratio{$key};
        my $shown = defined $r ? sprintf('%.3f', $r) : '';
        $shown = sprintf('%.5f', $r) if defined $r && $shown == $limit;    # no "1.100 <= 1.10 missed"
        $text .= defined $r
          ? sprintf("target %s: %s <= %.2f %s\n", $name, $shown, $limit, $r <= $limit ? 'met' : 'missed')
          : "target $name: not measured ("
          . ($run{$section} ? 'a baseline is missing (cc, File::FcntlLock)' : "section '$section' not run")
          . ")\n";
        $text .= sprintf("  floor: the same pair in C on a dup it closes after is %.3f of that"
              . " baseline; this is %.3f of the floor\n", @{ $floor{$key} })
          if $floor{$key};
    }
    $text .= "note: $_\n" for peer_notes(), @notes;
    $text .= sprintf("total time: %.0f s; load average at end: %s\n", now() - $started, load_average());
    return $text;
}
