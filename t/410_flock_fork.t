#!perl
# flock and fork: a lock taken with flock belongs to the open file
# description, so a forked child shares it through the inherited descriptor,
# LOCK_UN in either process releases it for both, and it lasts until the last
# descriptor sharing it is closed. A handle opened anew is a separate
# description and conflicts with it.
use strict;
use warnings;

use Test::More;
use POSIX ();
use lib 't/lib';
use LockerTest qw(spawn probe scratch_file now open_lock);
use File::Locker qw(:flock flock);

my $EWOULDBLOCK = POSIX::EWOULDBLOCK();
my $ETIMEDOUT   = POSIX::ETIMEDOUT();

# "RESULT ERRNO" for a flock call, ERRNO 0 on success.
sub outcome {
    my ($r) = @_;
    return $r ? '1 0' : '0 ' . ($! + 0);
}

subtest 'the child shares the lock; LOCK_UN in the child releases it for both' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    ok(flock($fh, LOCK_EX), 'parent takes LOCK_EX');
    my $c = spawn(sub {
        my ($parent) = @_;
        $parent->say('inherited ' . outcome(flock($fh, LOCK_EX | LOCK_NB)));

        open my $new, '<', $path or die "open $path: $!";
        $parent->say('new ' . outcome(flock($new, LOCK_EX | LOCK_NB)));
        $parent->say('new shared ' . outcome(flock($new, LOCK_SH | LOCK_NB)));
        my $t0 = now();
        my $r  = outcome(flock($new, LOCK_EX, 0.2));
        $parent->say(sprintf 'new timed %s %.6f', $r, now() - $t0);
        close $new;

        $parent->expect('unlock');
        $parent->say('unlocked ' . outcome(flock($fh, LOCK_UN)));
        $parent->expect('exit');
    });
    is($c->hear, 'inherited 1 0', "child: LOCK_EX|LOCK_NB on the inherited handle succeeds (the parent's own lock)");
    is($c->hear, "new 0 $EWOULDBLOCK", 'child: a handle opened anew conflicts (EWOULDBLOCK)');
    is($c->hear, "new shared 0 $EWOULDBLOCK", 'child: even for LOCK_SH');
    my ($r, $err, $took) = ($c->hear // '') =~ /^new timed (\d+) (\d+) (\S+)$/;
    is(join(" ", $r // "", $err // ""), "0 $ETIMEDOUT", 'child: a timed LOCK_EX on the new handle times out');
    cmp_ok($took // -1, ">=", 0.2, "child: after its timeout");
    is(probe($path, LOCK_SH), 0, 'a third process finds the file locked');

    $c->say('unlock');
    is($c->hear, 'unlocked 1 0', 'child: LOCK_UN on the inherited handle');
    is(probe($path, LOCK_EX), 1, "a third process can lock now: the parent's lock is gone too");
    $c->say('exit');
    is($c->wait, 0, 'child exited cleanly');
    close $fh;
};

subtest 'LOCK_UN in the parent releases the lock the child shares' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    ok(flock($fh, LOCK_EX), 'parent takes LOCK_EX');
    my $c = spawn(sub {
        my ($parent) = @_;
        $parent->say('inherited ' . outcome(flock($fh, LOCK_EX | LOCK_NB)));
        $parent->expect('check');
        open my $new, '<', $path or die "open $path: $!";
        $parent->say('new ' . outcome(flock($new, LOCK_EX | LOCK_NB)));
        close $new;
        $parent->expect('exit');
    });
    is($c->hear, 'inherited 1 0', 'child: holds the lock through the inherited handle');
    is(probe($path, LOCK_SH), 0, 'a third process finds the file locked');
    ok(flock($fh, LOCK_UN), 'parent: LOCK_UN');
    is(probe($path, LOCK_EX), 1, 'a third process can lock now');
    $c->say('check');
    is($c->hear, 'new 1 0', 'the child itself can lock the file on a new handle: its lock is gone');
    $c->say('exit');
    is($c->wait, 0, 'child exited cleanly');
    close $fh;
};

subtest 'a lock the child takes on the inherited handle is the parent\'s too' => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    my $c    = spawn(sub {
        my ($parent) = @_;
        $parent->say('locked ' . outcome(flock($fh, LOCK_EX)));
        $parent->expect('exit');
    });
    is($c->hear, 'locked 1 0', 'child: LOCK_EX on the inherited handle');
    is(probe($path, LOCK_SH), 0, 'a third process finds the file locked');
    ok(flock($fh, LOCK_EX | LOCK_NB), "parent: LOCK_EX|LOCK_NB succeeds, it is the same lock");
    ok(flock($fh, LOCK_UN), 'parent: LOCK_UN');
    is(probe($path, LOCK_EX), 1, "the child's lock is released");
    $c->say('exit');
    is($c->wait, 0, 'child exited cleanly');
    close $fh;
};

subtest "the child's exit or close does not release the parent's lock" => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    ok(flock($fh, LOCK_EX), 'parent takes LOCK_EX');

    my $c = spawn(sub {
        my ($parent) = @_;
        $parent->say('closed ' . (close($fh) ? 1 : 0));
        $parent->expect('exit');
    });
    is($c->hear, 'closed 1', 'child closed its copy of the handle');
    is(probe($path, LOCK_SH), 0, 'the lock is still held');
    $c->say('exit');
    is($c->wait, 0, 'child exited');
    is(probe($path, LOCK_SH), 0, 'and after the child exited, still held');

    $c = spawn(sub { });
    is($c->wait, 0, 'another child exited without touching the handle');
    is(probe($path, LOCK_SH), 0, 'the lock is still held');

    ok(flock($fh, LOCK_UN), 'parent: LOCK_UN');
    is(probe($path, LOCK_EX), 1, 'released');
    close $fh;
};

subtest "the lock outlives the parent's close while the child keeps the descriptor" => sub {
    my $path = scratch_file();
    my $fh   = open_lock($path);
    ok(flock($fh, LOCK_EX), 'parent takes LOCK_EX');
    my $c = spawn(sub {
        my ($parent) = @_;
        $parent->say('ready');
        $parent->expect('exit');
    });
    $c->expect('ready');
    ok(close($fh), 'parent closes its handle');
    is(probe($path, LOCK_SH), 0, "the lock is still held through the child's descriptor");
    $c->say('exit');
    is($c->wait, 0, 'child exited');
    is(probe($path, LOCK_EX), 1, 'the lock went with the last descriptor');
};

is(waitpid(-1, POSIX::WNOHANG()), -1, 'every child was reaped');

done_testing;
