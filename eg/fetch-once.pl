#!/usr/bin/perl
# Several build steps need the same artefact at once. Each runs
# eg/fetch-artefact.pl under `locker -v -w 60`: the first to get the lock
# fetches, the others wait (locker says who holds the lock while they wait)
# and then reuse what it left. The journal written under the lock shows
# exactly one fetch and no overlapping critical sections.
#
#   perl -Mblib eg/fetch-once.pl [RUNS]

use strict;
use warnings;
use File::Basename qw(dirname);
use File::Temp qw(tempdir);

my $runs    = shift // 5;
my $here    = dirname(__FILE__);
my $locker  = "$here/../bin/locker";
my $work    = "$here/fetch-artefact.pl";
my $dir     = tempdir('fetch-once-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $journal = "$dir/journal";
$| = 1;

# Let the commands find the module that ran this script (e.g. via -Mblib).
local $ENV{PERL5LIB} = join ':', grep { !ref } @INC;

print "$runs build steps start at once, each wanting $dir/artefact.tar\n\n";
my @pids;
for my $n (1 .. $runs) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        exec $^X, $locker, '-v', '-w', 60, "$dir/artefact.lock",
          $^X, $work, "$dir/artefact.tar", $journal, "step $n";
        die "exec: $!";
    }
    push @pids, $pid;
}
my $failed = grep { waitpid($_, 0) && $? != 0 } @pids;

open my $log, '<', $journal or die "open $journal: $!";
my @steps = sort { $a->[3] <=> $b->[3] } map { [split] } <$log>;    # by start
my $fetches  = grep { $_->[2] eq 'fetched' } @steps;
my $overlaps = grep { $steps[$_][3] < $steps[ $_ - 1 ][4] } 1 .. $#steps;
print "\n", scalar(@steps), " steps ran: $fetches fetched the artefact, ",
  scalar(@steps) - $fetches, " reused it; $overlaps overlapping critical sections\n";
exit($failed || $fetches != 1 || $overlaps || @steps != $runs ? 1 : 0);
