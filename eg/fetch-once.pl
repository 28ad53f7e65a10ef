#!/usr/bin/perl
# Several processes need the same build artefact at once. Each takes the
# lock; the first to get it does the (slow) fetch, the others wait on the
# lock and reuse what it left. The journal written under the lock shows that
# the critical sections never overlapped.
#
#   perl -Mblib eg/fetch-once.pl [WORKERS]

use strict;
use warnings;
use File::Locker qw(:flock flock);
use File::Temp qw(tempdir);
use Time::HiRes qw(time);

$| = 1;
my $workers = shift // 5;
my $dir     = tempdir('fetch-once-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $lock    = "$dir/artefact.lock";
my $cache   = "$dir/artefact.tar";
my $journal = "$dir/journal";
my $t0      = time;

sub say_at { printf "[%6.3fs] %s\n", time - $t0, join '', @_ }

sub fetch_once {
    my ($n) = @_;
    open my $fh, '>>', $lock or die "open $lock: $!";
    say_at "worker $n (pid $$) wants the artefact";
    flock($fh, LOCK_EX, 30) or die "worker $n: no lock in 30 s: $!\n";
    my $start = time;
    my $did;
    if (-e $cache) {
        $did = 'reused';
        say_at "worker $n holds the lock: artefact already there, reusing it";
    }
    else {
        $did = 'fetched';
        say_at "worker $n holds the lock: fetching the artefact";
        open my $out, '>', "$cache.part" or die "open: $!";
        for my $chunk (1 .. 5) {    # stands for a slow download
            print {$out} "chunk $chunk\n";
            select undef, undef, undef, 0.1;
        }
        close $out or die "close: $!";
        rename "$cache.part", $cache or die "rename: $!";
    }
    open my $log, '>>', $journal or die "open $journal: $!";
    printf {$log} "%d %s %.6f %.6f\n", $n, $did, $start, time;
    close $log;
    say_at "worker $n releases the lock ($did)";
    flock($fh, LOCK_UN);
}

my @pids;
for my $n (1 .. $workers) {
    my $pid = fork // die "fork: $!";
    if (!$pid) { fetch_once($n); exit 0 }
    push @pids, $pid;
}
my $failed = grep { waitpid($_, 0) && $? != 0 } @pids;

open my $log, '<', $journal or die "open $journal: $!";
my @runs = sort { $a->[2] <=> $b->[2] } map { [split] } <$log>;
my $fetches  = grep { $_->[1] eq 'fetched' } @runs;
my $overlaps = grep { $runs[$_][2] < $runs[ $_ - 1 ][3] } 1 .. $#runs;
print "\n", scalar(@runs), " workers ran, $fetches fetched, ",
  scalar(@runs) - $fetches, " reused; $overlaps overlapping critical sections\n";
exit($failed || $fetches != 1 || $overlaps || @runs != $workers ? 1 : 0);
