# The Perl suite's XS paths under valgrind memcheck: no invalid reads or
# writes, no use of uninitialised values, no bad frees anywhere, and no
# memory definitely lost from our code (Perl's own exit-time leaks are
# ignored: a leak counts only when its stack passes through File::Locker).
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More;

my $valgrind = grep { -x "$_/valgrind" } split /:/, $ENV{PATH};
plan skip_all => 'valgrind not installed' unless $valgrind;

# Quick, deterministic files covering every XSUB (t/900 calls each one with
# good and bad arguments); the timing tests add minutes under valgrind, and
# their patience limits for peers are not meant for a 20x slowdown.
my @files = $ENV{LOCKER_VALGRIND_TESTS}
  ? split(' ', $ENV{LOCKER_VALGRIND_TESTS})
  : grep { -e } map { "t/$_" } qw(
      000_load.t 010_flock_api.t 100_flock_conflicts.t
      300_lock_file.t 310_guard_fork.t 900_bad_input.t);

my $dir = tempdir('valgrind-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $ours = qr/Locker\.so|locker::|File__Locker|xs\/Locker|src\//;

# Croaks with C++ objects alive leak what those objects own, and a croak
# path tried once with short arguments leaks nothing a small-string buffer
# cannot hold. So every croak path of every XSUB is also run many times with
# arguments longer than any such buffer; one lost block is enough to fail.
my $croaks = "$dir/croaks.pl";
{
    open my $fh, '>', $croaks or die "write $croaks: $!";
    print {$fh} <<'CROAKS';
use strict;
use warnings;
use File::Temp qw(tempdir);
use File::Locker qw(:flock flock lock_file lock_range range_conflict lock_holders);
my $dir  = tempdir(CLEANUP => 1);
my $path = "$dir/" . ('p' x 64);
my $long = 'x' x 64;
my $guard = lock_range($path, LOCK_SH, 0, 10) or die "lock_range: $!";
my @calls = (
    sub { lock_file($path, LOCK_EX, $long => 1) },
    sub { lock_file($path, LOCK_EX, timeout => 1, $long => 1) },
    sub { lock_file($path, LOCK_EX, timeout => $long) },
    sub { lock_file($path, LOCK_EX, perms => $long) },
    sub { lock_file($path, LOCK_EX, create => 1, $long) },
    sub { lock_file($path, $long) },
    sub { lock_file("$path\0$long", LOCK_EX) },
    sub { lock_file([], LOCK_EX) },
    sub { lock_range($path, LOCK_SH, 0, 1, $long => 1) },
    sub { lock_range($path, LOCK_SH, $long, 1) },
    sub { lock_range($path, LOCK_SH, 0, -1) },
    sub { range_conflict($path, LOCK_SH, $long, 1) },
    sub { range_conflict("$path\0$long", LOCK_SH, 0, 1) },
    sub { lock_holders("$path\0$long") },
    sub { lock_holders({}) },
    sub { $guard->upgrade($long => 1) },
    sub { $guard->upgrade(timeout => $long) },
    sub { File::Locker::Guard::mode(bless {}, $long) },
);
for my $call (@calls) {
    for (1 .. 50) {
        eval { $call->(); 1 } and die "a croak path did not croak\n";
    }
}
print "ok\n";
CROAKS
    close $fh or die "write $croaks: $!";
}
push @files, $croaks;

# The same leak class measured instead of matched: croaks on option names
# longer than a small-string buffer (39 characters, as the issue had them),
# and on a tied target that reads well once and badly the second time
# (a second read inside the engine call croaks with its objects alive),
# each run 10 and 2,000 times. Perl's own exit-time losses do not depend on
# the count, so any growth in "definitely lost" or "indirectly lost" is ours,
# whatever its stack says.
my $repeated = "$dir/repeated_croaks.pl";
{
    open my $fh, '>', $repeated or die "write $repeated: $!";
    print {$fh} <<'REPEATED';
use strict;
use warnings;
use File::Temp qw(tempdir);
use File::Locker qw(:flock lock_file lock_range range_conflict lock_holders lock_file_async
                    lock_range_async);
package Flaky {    # a good PATH on the first read, an empty one on the next
    sub TIESCALAR { my ($class, $path) = @_; return bless { path => $path, reads => 0 }, $class }
    sub FETCH { my ($self) = @_; return $self->{reads}++ % 2 ? '' : $self->{path} }
    sub STORE { }
}
my $count = shift;
my $dir   = tempdir(CLEANUP => 1);
my $path  = "$dir/lock";
my $name  = 'a_thirty_nine_character_unknown_option_';
my $guard = lock_range($path, LOCK_SH, 0, 10) or die "lock_range: $!";
my @calls = (
    sub { lock_file($path, LOCK_EX, $name => 1) },
    sub { lock_range($path, LOCK_SH, 0, 1, $name => 1) },
    sub { lock_file_async($path, LOCK_EX, $name => 1) },
    sub { lock_holders($path, $name => 1) },
    sub { $guard->upgrade($name => 1) },
    sub { tie my $target, 'Flaky', "$dir/" . ('f' x 64); lock_file($target, LOCK_EX) },
    sub { tie my $target, 'Flaky', "$dir/" . ('f' x 64); lock_range($target, LOCK_SH, 0, 1) },
    sub { tie my $target, 'Flaky', "$dir/" . ('f' x 64); lock_range_async($target, LOCK_SH, 0, 1) },
    sub { tie my $target, 'Flaky', "$dir/" . ('f' x 64); range_conflict($target, LOCK_SH, 0, 1) },
    sub { tie my $target, 'Flaky', "$dir/" . ('f' x 64); lock_holders($target) },
);
for my $call (@calls) {
    # A tied target read once is a good PATH: then the call does not croak.
    eval { $call->() } for 1 .. $count;
}
print "ok\n";
REPEATED
    close $fh or die "write $repeated: $!";
}

sub lost_bytes {
    my ($count) = @_;
    my $log = "$dir/repeated.$count.log";
    my $output = qx{valgrind --leak-check=full --log-file=$log $^X -Mblib $repeated $count 2>&1};
    is($?, 0, "repeated croaks ($count times) run under valgrind") or diag($output);
    open my $fh, '<', $log or die "open $log: $!";
    my $text = do { local $/; <$fh> };
    my $lost = 0;
    $lost += $1 =~ tr/,//dr while $text =~ /(?:definitely|indirectly) lost: ([\d,]+) bytes/g;
    return $lost;
}
my ($few, $many) = (lost_bytes(10), lost_bytes(2000));
cmp_ok($many, '<=', $few, 'repeated croaks lose no more memory 2,000 times than 10 times')
  or diag("lost $few bytes after 10 rounds, $many bytes after 2,000");

for my $file (@files) {
    (my $tag = $file) =~ s{\W}{_}g;
    my @cmd = ('valgrind', '--quiet', '--leak-check=full', '--show-leak-kinds=definite',
               '--num-callers=40', "--log-file=$dir/$tag.%p.log",
               $^X, '-Mblib', '-It/lib', $file);
    my $output = qx{@cmd 2>&1};
    is($?, 0, "$file passes under valgrind") or diag($output);

    my (@errors, @leaks);
    for my $log (glob "$dir/$tag.*.log") {
        open my $fh, '<', $log or die "open $log: $!";
        # Records are separated by lines holding only the "==PID==" prefix:
        # drop the prefixes, then split on the blank lines left.
        my $text = do { local $/; <$fh> };
        $text =~ s/^==\d+== ?//mg;
        for my $record (split /\n\s*\n/, $text) {
            # Perl's own modules have known reports of their own (Cwd's
            # overlapping memcpy): count those only when our code is involved.
            push @errors, $record
              if $record =~ /Invalid (?:read|write|free)|Mismatched free/
              || ($record =~ /uninitialised|overlap/ && $record =~ $ours);
            push @leaks, $record if $record =~ /definitely lost/ && $record =~ $ours;
        }
    }
    is(scalar @errors, 0, "$file: no memory errors") or diag(join "\n\n", @errors);
    is(scalar @leaks, 0, "$file: no definite leaks from our code") or diag(join "\n\n", @leaks);
}

done_testing;
