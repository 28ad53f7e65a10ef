# The range suite again, with classic POSIX locks and the process-wide table
# forced instead of OFD locks: both backends must behave the same. Which
# files, and how they are run, is LockerTest's OFD/classic matrix.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use LockerTest qw(classic_files run_classic);

my @files = classic_files();
plan skip_all => 'no range tests found' unless @files;

for my $file (@files) {
    my ($status, $output) = run_classic($file);
    ok($status == 0, "$file passes with FILE_LOCKER_NO_OFD=1")
      or diag("exit status $status; output:\n$output");
    unlike($output, qr/^not ok(?!.*# TODO)/m, "$file: no failing assertion");
}

# The switch itself must take effect in a fresh process.
my (undef, $mode) = run_classic('-e', q{require File::Locker;
    print File::Locker::_using_ofd_locks() ? 'ofd' : 'classic'});
is($mode, 'classic', 'FILE_LOCKER_NO_OFD=1 selects classic POSIX locks');

done_testing;
