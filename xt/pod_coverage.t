use strict;
use warnings;
use Test::More;

eval { require Test::Pod::Coverage; Test::Pod::Coverage->VERSION(1.08); 1 }
  or plan skip_all => 'Test::Pod::Coverage 1.08 required';

# Every public function and guard method is documented; private helpers
# start with an underscore, CLONE/CLONE_SKIP/DESTROY are Perl's hooks,
# STORABLE_* are Storable's (the POD says that freezing a guard croaks), and
# the constants are Fcntl's own.
# The guard class lives in File/Locker.pm; let Pod::Coverage find it loaded.
require File::Locker;
$INC{'File/Locker/Guard.pm'} //= $INC{'File/Locker.pm'};
$INC{'File/Locker/Waiter.pm'} //= $INC{'File/Locker.pm'};

my $private = [qr/^_/, qr/^(?:CLONE|CLONE_SKIP|DESTROY)$/, qr/^STORABLE_/, qr/^LOCK_/];
Test::Pod::Coverage::pod_coverage_ok('File::Locker', { also_private => $private });
Test::Pod::Coverage::pod_coverage_ok('File::Locker::Guard', {
    also_private => $private,
    pod_from     => 'lib/File/Locker.pm',
});
Test::Pod::Coverage::pod_coverage_ok('File::Locker::Waiter', {
    also_private => $private,
    pod_from     => 'lib/File/Locker.pm',
});
done_testing;
