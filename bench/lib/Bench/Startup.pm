package Bench::Startup;

# Start-up time of the locker command against util-linux flock(1): each
# runs "-n FILE true" on a free lock, as a shell script would. Both are
# timed in the same interleaved rounds (fork, exec, wait for the exit), so
# slow drift of the machine affects both sides of each round's ratio.
#
# locker runs from a copy of the built module laid out as `make install`
# lays it out (File/Locker.pm beside auto/File/Locker/Locker.so), since in
# blib/ the module and its shared object sit in different trees, which makes
# XSLoader fall back to the slower DynaLoader, and -Mblib itself loads
# several modules. No -Mblib, no PERL5LIB: just -I to the copy.

use strict;
use warnings;

use Exporter 'import';
use File::Copy qw(copy);
use File::Path qw(make_path);
use Bench::Util qw(now median);

our @EXPORT_OK = qw(startup_variants run_startup);

# The commands to time, as [name, argv]; the first is the baseline. Returns
# an empty list and a note when flock(1) or the built module is missing.
sub startup_variants {
    my ($dir, $locker_script, $lock_file) = @_;
    my $flock = (grep { -x } '/usr/bin/flock', '/bin/flock')[0]
      or return (undef, 'skipped startup: util-linux flock(1) is not installed');
    my $inst = installed_copy("$dir/installed")
      or return (undef, 'skipped startup: cannot find the built File::Locker (run make first)');
    return ([
        [ 'flock -n FILE true', [ $flock, '-n', $lock_file, 'true' ] ],
        [ 'locker -n FILE true', [ $^X, "-I$inst", $locker_script, '-n', $lock_file, 'true' ] ],
        [ 'perl -e1 (for scale)', [ $^X, '-e1' ] ],
        [ 'perl -MFcntl -e1', [ $^X, '-MFcntl', '-e1' ] ],
        [ 'perl -MFile::Locker -e1', [ $^X, "-I$inst", '-MFile::Locker', '-e1' ] ],
    ]);
}

# Copies the loaded File::Locker and its shared object into DIR as they
# would be installed; returns DIR, or undef.
sub installed_copy {
    my ($dir) = @_;
    my $pm = $INC{'File/Locker.pm'} or return;
    my ($so) = grep { -f } map { "$_/auto/File/Locker/Locker.so" } @INC;
    return unless $so;
    make_path("$dir/File", "$dir/auto/File/Locker");
    copy($pm, "$dir/File/Locker.pm") or return;
    copy($so, "$dir/auto/File/Locker/Locker.so") or return;
    chmod 0755, "$dir/auto/File/Locker/Locker.so";
    return $dir;
}

# Runs each variant RUNS times per round, in ROUNDS rounds whose order
# rotates; returns { name => [mean seconds per run, one per round] } for
# the elapsed time and another such hash for the CPU time (user + system of
# the reaped children, which a loaded machine inflates less). Dies if a
# command fails, so a broken locker cannot look fast.
sub run_startup {
    my ($variants, $rounds, $runs) = @_;
    my (%per_round, %cpu);
    open(my $null, '>', '/dev/null') or die "open /dev/null: $!\n";
    for my $round (0 .. $rounds - 1) {
        my @order = @$variants;
        push @order, splice(@order, 0, $round % @order);
        for my $v (@order) {
            my ($name, $argv) = @$v;
            my $t0 = now();
            my @c0 = times;
            for (1 .. $runs) {
                my $pid = fork // die "fork: $!\n";
                if (!$pid) {
                    open(STDOUT, '>&', $null) && open(STDERR, '>&', $null) or exit 120;
                    exec { $argv->[0] } @$argv;
                    exit 121;
                }
                waitpid($pid, 0);
                die "startup: '$name' exited with status $?\n" if $?;
            }
            push @{ $per_round{$name} }, (now() - $t0) / $runs;
            my @c1 = times;
            push @{ $cpu{$name} }, ($c1[2] + $c1[3] - $c0[2] - $c0[3]) / $runs;
        }
    }
    return (\%per_round, \%cpu);
}

1;
