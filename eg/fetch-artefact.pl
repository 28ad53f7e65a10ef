#!/usr/bin/perl
# The work one build step does under the lock: reuse the artefact if an
# earlier run already fetched it, fetch it otherwise. Run it under locker:
#
#   locker -w 60 artefact.lock perl eg/fetch-artefact.pl CACHE JOURNAL NAME
#
# Without the lock, concurrent runs would all fetch, or read half a file.

use strict;
use warnings;
use Time::HiRes qw(time);

my ($cache, $journal, $name) = @ARGV;
die "usage: $0 CACHE JOURNAL NAME\n" unless defined $name;
$| = 1;

my $start = time;
my $did;
if (-e $cache) {
    $did = 'reused';
    print "$name: artefact already there, reusing it\n";
}
else {
    $did = 'fetched';
    print "$name: fetching the artefact\n";
    open my $out, '>', "$cache.part" or die "open: $!";
    for my $chunk (1 .. 5) {    # stands for a slow download
        print {$out} "chunk $chunk\n";
        select undef, undef, undef, 0.1;
    }
    close $out or die "close: $!";
    rename "$cache.part", $cache or die "rename: $!";
}
open my $log, '>>', $journal or die "open $journal: $!";
printf {$log} "%s %s %.6f %.6f\n", $name, $did, $start, time;
close $log or die "close: $!";
