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
        local $/ = '';    # valgrind separates records with blank lines
        while (my $record = <$fh>) {
            # Perl's own modules have known reports of their own (Cwd's
            # overlapping memcpy): count those only when our code is involved.
            push @errors, $record
              if $record =~ /Invalid (?:read|write|free)|Mismatched free/
              || ($record =~ /uninitialised|overlap/ && $record =~ $ours);
            push @leaks, $record if $record =~ /definitely lost/ && $record =~ $ours;
        }
    }
    is(scalar @errors, 0, "$file: no memory errors") or diag(@errors);
    is(scalar @leaks, 0, "$file: no definite leaks from our code") or diag(@leaks);
}

done_testing;
