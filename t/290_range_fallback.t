# The range suite again, with classic POSIX locks and the process-wide table
# forced instead of OFD locks: both backends must behave the same.
use strict;
use warnings;
use Test::More;

my @files = grep { !/290_range_fallback/ } sort glob 't/2[0-9][0-9]_*.t';
plan skip_all => 'no range tests found' unless @files;

local $ENV{FILE_LOCKER_NO_OFD} = 1;
for my $file (@files) {
    my $output = qx{"$^X" -Mblib -It/lib "$file" 2>&1};
    my $status = $?;
    ok($status == 0, "$file passes with FILE_LOCKER_NO_OFD=1")
      or diag("exit status $status; output:\n$output");
    unlike($output, qr/^not ok(?!.*# TODO)/m, "$file: no failing assertion");
}

# The switch itself must take effect in a fresh process.
my $mode = qx{"$^X" -Mblib -MFile::Locker -e "print File::Locker::_using_ofd_locks() ? 'ofd' : 'classic'"};
is($mode, 'classic', 'FILE_LOCKER_NO_OFD=1 selects classic POSIX locks');

done_testing;
