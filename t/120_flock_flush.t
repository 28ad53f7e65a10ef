#!perl
# File::Locker::flock flushes the handle's output buffer before it locks and
# before it unlocks, as CORE::flock does, so that whatever was printed under
# the lock is in the file by the time the next holder gets it -- even though
# the handles here keep Perl's default buffering and nobody flushes.

use strict;
use warnings;

use Test::More;
use Fcntl qw(SEEK_SET SEEK_END);
use POSIX qw(EWOULDBLOCK);
use File::Locker qw(:flock flock);
use lib 't/lib';
use LockerTest qw(scratch_file spawn holder slurp read_line);

$SIG{PIPE} = 'IGNORE';    # a dead peer must fail a test, not kill the script

sub write_file {
    my ($path, $text) = @_;
    open my $out, '>', $path or die "open $path: $!";
    print $out $text or die "write $path: $!";
    close $out or die "close $path: $!";
}

# A child appending to PATH through one buffered '>>' handle. On "append
# LINE" it takes File::Locker::flock(LOCK_EX), reads the file as it is under
# the lock, seeks to the end, prints LINE, notes the file's size, unlocks with
# File::Locker::flock(LOCK_UN) and notes the size again, then reports
# "seen=L1,L2,... before=N after=N". Stops on "quit" or end of file.
sub appender {
    my ($path) = @_;
    return spawn(sub {
        my ($parent) = @_;
        open my $out, '>>', $path or die "open $path: $!";
        while (defined(my $command = $parent->hear)) {
            last if $command eq 'quit';
            my ($line) = $command =~ /^append (\S+)$/ or die "unknown command '$command'\n";
            File::Locker::flock($out, LOCK_EX) or die "lock: $!\n";
            my $seen = slurp($path);
            seek $out, 0, SEEK_END or die "seek: $!\n";
            print $out "$line\n" or die "print: $!\n";
            my $before = -s $path;
            File::Locker::flock($out, LOCK_UN) or die "unlock: $!\n";
            my $after = -s $path;
            $parent->say('seen=' . join(',', split /\n/, $seen) . " before=$before after=$after");
        }
        close $out;
    });
}

subtest 'flush before unlock: each holder sees every earlier line' => sub {
    my $path = scratch_file();
    my %peer = (A => appender($path), B => appender($path));
    my @written;
    for my $round (1 .. 3) {
        for my $name (qw(A B)) {
            my $line = "$name$round";
            $peer{$name}->say("append $line");
            my $report = $peer{$name}->hear // 'end of file';
            my ($seen, $before, $after) = $report =~ /^seen=(\S*) before=(\d+) after=(\d+)$/;
            if (!defined $seen) {
                fail("$line: appender $name reported: $report");
                next;
            }
            my $size = length join '', map { "$_\n" } split /,/, $seen;
            is($seen, join(',', @written), "$line: $name, holding the lock, sees every earlier line");
            is($before, $size, "$line: before the unlock its line was still in the buffer (precondition)");
            is($after, $size + length("$line\n"), "$line: after File::Locker::flock(LOCK_UN) it is in the file");
            push @written, $line;
        }
    }
    is(slurp($path), join('', map { "$_\n" } @written), 'the file holds every line, in order');
    for my $name (qw(A B)) {
        $peer{$name}->say('quit');
        is($peer{$name}->wait, 0, "appender $name exited cleanly");
    }
};

subtest 'flush before unlock: A unlocks, then B locks and reads' => sub {
    my $path = scratch_file();
    my $writer = spawn(sub {
        my ($parent) = @_;
        open my $out, '>>', $path or die "open $path: $!";
        File::Locker::flock($out, LOCK_EX) or die "lock: $!\n";
        seek $out, 0, SEEK_END or die "seek: $!\n";
        print $out "A\n" or die "print: $!\n";
        my $before = -s $path;
        my $unlocked = File::Locker::flock($out, LOCK_UN);
        $parent->say("unlocked=$unlocked before=$before");
        $parent->expect('quit');
        close $out;
    });
    my $report = $writer->hear // 'end of file';
    is($report, 'unlocked=1 before=0', 'A printed "A" under the lock without flushing, then unlocked');

    # B is told only now, through the pipe, so it locks strictly after A's unlock.
    my $reader = spawn(sub {
        my ($parent) = @_;
        $parent->expect('go');
        open my $fh, '<', $path or die "open $path: $!";
        File::Locker::flock($fh, LOCK_EX) or die "lock: $!\n";
        my $text = slurp($path);
        File::Locker::flock($fh, LOCK_UN) or die "unlock: $!\n";
        $parent->say('read=' . join(',', split /\n/, $text));
    });
    $reader->say('go');
    is($reader->hear, 'read=A', 'B, holding the lock after A, reads the line A printed');
    is($reader->wait, 0, 'B exited cleanly');
    $writer->say('quit');
    is($writer->wait, 0, 'A exited cleanly');
};

subtest 'flush before lock' => sub {
    my $path = scratch_file();
    my $writer = spawn(sub {
        my ($parent) = @_;
        open my $out, '>>', $path or die "open $path: $!";
        print $out "early\n" or die "print: $!\n";
        $parent->say('printed');
        $parent->expect('lock');
        my $locked = File::Locker::flock($out, LOCK_EX);
        $parent->say("locked=$locked");
        $parent->expect('release');
        File::Locker::flock($out, LOCK_UN) or die "unlock: $!\n";
        $parent->say('released');
        $parent->hear;
        close $out;
    });
    is($writer->hear, 'printed', 'A printed a line without locking or flushing');
    is(slurp($path), '', 'the line is still in the buffer (precondition)');
    $writer->say('lock');
    is($writer->hear, 'locked=1', 'A took File::Locker::flock(LOCK_EX)');
    is(slurp($path), "early\n", 'while A holds the lock, the line printed before locking is in the file');
    $writer->say('release');
    is($writer->hear, 'released', 'A released');
    is($writer->wait, 0, 'A exited cleanly');
};

subtest 'flush before a refused LOCK_NB attempt, as CORE::flock does' => sub {
    my $path   = scratch_file();
    my $holder = holder($path, LOCK_EX);    # CORE::flock in another process
    my $writer = spawn(sub {
        my ($parent) = @_;
        open my $out, '>>', $path or die "open $path: $!";
        print $out "attempt\n" or die "print: $!\n";
        $parent->say('printed');
        $parent->expect('try');
        $! = 0;
        my $got = File::Locker::flock($out, LOCK_EX | LOCK_NB);
        $parent->say("got=$got errno=" . ($! + 0));
        $parent->hear;
        close $out;
    });
    is($writer->hear, 'printed', 'A printed a line without locking or flushing');
    is(slurp($path), '', 'the line is still in the buffer (precondition)');
    $writer->say('try');
    is($writer->hear, 'got=0 errno=' . EWOULDBLOCK, 'A: LOCK_EX|LOCK_NB is refused while another process holds LOCK_EX');
    is(slurp($path), "attempt\n", 'the line was flushed before the attempt all the same');
    is($writer->wait, 0, 'A exited cleanly');
    $holder->say('release');
    is($holder->hear, 'released', 'holder released');
    is($holder->wait, 0, 'holder exited cleanly');
};

subtest 'counter: read-modify-write under the lock, buffered, no explicit flush' => sub {
    my ($workers, $increments) = (4, 50);
    my $path = scratch_file();
    write_file($path, "0\n");

    # After each unlock a worker reports on the shared ticks pipe and waits
    # for "next" before it locks again. While it waits, another worker gets
    # the lock, so the lock changes hands between processes on nearly every
    # increment, at a moment when only the unlock can have flushed the
    # previous holder's write.
    pipe(my $ticks_in, my $ticks_out) or die "pipe: $!";
    my @peers = map {
        my $id = $_;
        spawn(sub {
            my ($parent) = @_;
            close $ticks_in;
            $ticks_out->autoflush(1);
            open my $fh, '+<', $path or die "open $path: $!";
            # Kept until the child's _exit, which flushes nothing: a write
            # that the last unlock did not flush is lost.
            our @keep = ($fh);
            $parent->say('ready');
            $parent->expect('go');
            my $done = 0;
            for (1 .. $increments) {
                File::Locker::flock($fh, LOCK_EX) or die "lock: $!\n";
                seek $fh, 0, SEEK_SET or die "seek: $!\n";
                my $text = readline $fh;
                my ($value) = ($text // '') =~ /^(\d+)\n\z/
                  or die "read '" . ($text // 'end of file') . "' under the lock\n";
                seek $fh, 0, SEEK_SET or die "seek: $!\n";
                truncate $fh, 0 or die "truncate: $!\n";
                print $fh $value + 1, "\n" or die "print: $!\n";
                File::Locker::flock($fh, LOCK_UN) or die "unlock: $!\n";
                $done++;
                print $ticks_out "$id\n" or die "tick: $!\n";
                $parent->expect('next');
            }
            $parent->say("done $done");
        });
    } 0 .. $workers - 1;
    close $ticks_out;

    is($_->hear, 'ready', 'worker ' . $_->pid . ' ready') for @peers;
    $_->say('go') for @peers;
    my $ticks = 0;
    while (defined(my $id = read_line($ticks_in))) {
        $ticks++;
        $peers[$id]->say('next');
    }
    close $ticks_in;
    is($ticks, $workers * $increments, 'every increment was reported');
    is($_->hear, "done $increments", 'worker ' . $_->pid . " did $increments increments") for @peers;
    is($_->wait, 0, 'worker ' . $_->pid . ' exited cleanly') for @peers;
    is(slurp($path), $workers * $increments . "\n", "the counter reads exactly $workers x $increments");
};

done_testing;
