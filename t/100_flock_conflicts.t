#!perl
# File::Locker::flock: which requests conflict with which holders, between
# processes and between two handles of one file in one process, and the
# single-handle operations that must succeed (unlock when unlocked,
# conversions, LOCK_EX on a read-only handle).

use strict;
use warnings;

use Test::More;
use POSIX qw(EWOULDBLOCK);
use File::Locker qw(:flock flock);
use lib 't/lib';
use LockerTest qw(scratch_file spawn probe our_holder try_flock conflicts);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

my %NAME = (LOCK_SH() => 'LOCK_SH', LOCK_EX() => 'LOCK_EX');
my @MODES = (LOCK_SH, LOCK_EX);

sub release_holder {
    my ($peer, $what) = @_;
    $peer->say('release');
    is($peer->hear, 'released', "$what: holder released");
}

# Expects a request refused as flock(2) refuses with LOCK_NB: 0, EWOULDBLOCK.
sub refused_ok {
    my ($got, $errno, $what) = @_;
    ok(defined $got && !$got && $got eq '0', "$what: refused with 0")
      or diag('got ' . ($got // 'undef'));
    is($errno, EWOULDBLOCK, "$what: \$! is EWOULDBLOCK");
}

subtest 'conflict matrix across processes' => sub {
    for my $held (@MODES) {
        for my $wanted (@MODES) {
            my $what = "$NAME{$held} held by another process, $NAME{$wanted}|LOCK_NB requested";
            my $path = scratch_file();
            my ($holder, $word) = our_holder($path, $held);
            is($word, 'locked', "$what: holder got its lock");
            is(probe($path, LOCK_EX), 0, "$what: the holder's lock is really held");

            open my $fh, '<', $path or die "open $path: $!";
            my ($got, $errno) = try_flock($fh, $wanted | LOCK_NB);
            if (conflicts($held, $wanted)) {
                refused_ok($got, $errno, $what);
            }
            else {
                is($got, 1, "$what: granted");
                is(flock($fh, LOCK_UN), 1, "$what: our shared lock released");
            }

            release_holder($holder, $what);
            ($got, $errno) = try_flock($fh, $wanted | LOCK_NB);
            is($got, 1, "$what: granted after the holder released")
              or diag("errno $errno");
            is(probe($path, LOCK_EX), 0, "$what: the new lock is visible to another process");
            is(flock($fh, LOCK_UN), 1, "$what: unlocked");
            close $fh;
            is($holder->wait, 0, "$what: holder exited cleanly");
        }
    }
};

subtest 'conflict matrix across two handles in one process' => sub {
    for my $held (@MODES) {
        for my $wanted (@MODES) {
            my $what = "$NAME{$held} on one handle, $NAME{$wanted}|LOCK_NB on another";
            my $path = scratch_file();
            open my $first,  '<', $path or die "open $path: $!";
            open my $second, '<', $path or die "open $path: $!";

            is(flock($first, $held), 1, "$what: first handle locked");
            my ($got, $errno) = try_flock($second, $wanted | LOCK_NB);
            if (conflicts($held, $wanted)) {
                refused_ok($got, $errno, $what);
            }
            else {
                is($got, 1, "$what: granted");
                is(flock($second, LOCK_UN), 1, "$what: second handle's shared lock released");
            }

            is(flock($first, LOCK_UN), 1, "$what: first handle unlocked");
            ($got, $errno) = try_flock($second, $wanted | LOCK_NB);
            is($got, 1, "$what: granted once the first handle unlocked")
              or diag("errno $errno");
            is(flock($second, LOCK_UN), 1, "$what: second handle unlocked");
            close $first;
            close $second;
        }
    }
};

subtest 'LOCK_EX on a read-only handle' => sub {
    my $path = scratch_file();
    chmod 0444, $path or die "chmod $path: $!";
    open my $fh, '<', $path or die "open $path: $!";
    my ($got, $errno) = try_flock($fh, LOCK_EX | LOCK_NB);
    is($got, 1, 'LOCK_EX|LOCK_NB granted on a handle opened with <')
      or diag("errno $errno");
    is(probe($path, LOCK_SH), 0, 'and it is exclusive: another process cannot share it');
    is(flock($fh, LOCK_UN), 1, 'unlocked');
    is(flock($fh, LOCK_EX), 1, 'blocking LOCK_EX granted on the read-only handle too');
    is(probe($path, LOCK_SH), 0, 'exclusive again');
    is(flock($fh, LOCK_UN), 1, 'unlocked again');
    is(probe($path, LOCK_EX), 1, 'free for everyone after LOCK_UN');
    close $fh;
};

subtest 'LOCK_UN on an unlocked handle' => sub {
    my $path = scratch_file();
    open my $fh, '<', $path or die "open $path: $!";
    my ($got, $errno) = try_flock($fh, LOCK_UN);
    is($got, 1, 'LOCK_UN on a handle that never locked returns 1')
      or diag("errno $errno");
    is(flock($fh, LOCK_EX), 1, 'lock');
    is(flock($fh, LOCK_UN), 1, 'unlock');
    ($got, $errno) = try_flock($fh, LOCK_UN);
    is($got, 1, 'a second LOCK_UN returns 1') or diag("errno $errno");
    ($got, $errno) = try_flock($fh, LOCK_UN | LOCK_NB);
    is($got, 1, 'LOCK_UN|LOCK_NB returns 1') or diag("errno $errno");
    is(probe($path, LOCK_EX), 1, 'nothing is left locked');
    close $fh;
};

subtest 'conversions on one handle, uncontended' => sub {
    my $path = scratch_file();
    open my $fh, '<', $path or die "open $path: $!";

    for my $nb (LOCK_NB, 0) {
        my $how = $nb ? 'with LOCK_NB' : 'blocking';
        is(flock($fh, LOCK_SH | $nb), 1, "$how: LOCK_SH");
        is(probe($path, LOCK_SH), 1, "$how: shared: another process can share it");
        is(probe($path, LOCK_EX), 0, "$how: shared: another process cannot take it exclusively");

        my ($got, $errno) = try_flock($fh, LOCK_EX | $nb);
        is($got, 1, "$how: converted LOCK_SH to LOCK_EX") or diag("errno $errno");
        is(probe($path, LOCK_SH), 0, "$how: now exclusive: another process cannot share it");

        ($got, $errno) = try_flock($fh, LOCK_SH | $nb);
        is($got, 1, "$how: converted LOCK_EX to LOCK_SH") or diag("errno $errno");
        is(probe($path, LOCK_SH), 1, "$how: shared again: another process can share it");
        is(probe($path, LOCK_EX), 0, "$how: shared again: still held");

        is(flock($fh, LOCK_UN), 1, "$how: unlocked");
        is(probe($path, LOCK_EX), 1, "$how: free after LOCK_UN");
    }
    close $fh;
};

done_testing;
