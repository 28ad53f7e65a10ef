# `make dist` builds a tarball that cpanm installs, tests passing, into a
# fresh directory; the installed module and the locker command then work.
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More;
use lib 'xt/lib';
use DistTarball qw(make_tarball);

my ($cpanm) = grep { -x } map { "$_/cpanm" } split /:/, $ENV{PATH};
plan skip_all => 'cpanm not installed' unless $cpanm;
-e 'Makefile' or plan skip_all => 'run perl Makefile.PL first';

my $dir = tempdir('dist-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my ($tarball, $out) = make_tarball($dir);
ok($tarball, 'make dist wrote a tarball') or diag($out);

my $prefix = "$dir/install";
$out = qx{"$cpanm" --quiet --local-lib-contained "$prefix" "$tarball" 2>&1};
is($?, 0, 'cpanm builds, tests and installs the tarball') or diag($out);

# Only the installed copy: prove -b would otherwise lend us blib/.
my $lib = "$prefix/lib/perl5";
local $ENV{PERL5LIB} = $lib;
my $check = q{use File::Locker qw(:flock lock_file); my $g = lock_file($ARGV[0], LOCK_EX) or die $!; print $g->is_locked ? "locked" : "not locked"};
my $answer = qx{"$^X" -e '$check' "$dir/probe.lock" 2>&1};
is($answer, 'locked', 'the installed module takes a lock');
ok(-x "$prefix/bin/locker", 'locker is installed');
$answer = qx{"$prefix/bin/locker" "$dir/cmd.lock" sh -c 'echo ran' 2>&1};
is($answer, "ran\n", 'the installed locker runs a command under the lock');
done_testing;
