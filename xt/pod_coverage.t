use strict;
use warnings;
use Test::More;

eval { require Test::Pod::Coverage; Test::Pod::Coverage->VERSION(1.08); 1 }
  or plan skip_all => 'Test::Pod::Coverage 1.08 required';

# Every public function and guard method is documented; private helpers
# start with an underscore, CLONE/CLONE_SKIP/DESTROY and the STORABLE_ hooks
# are hooks of Perl and Storable, and
# the constants are Fcntl's own.
# The guard class lives in File/Locker.pm; let Pod::Coverage find it loaded.
require File::Locker;
$INC{'File/Locker/Guard.pm'} //= $INC{'File/Locker.pm'};
$INC{'File/Locker/Waiter.pm'} //= $INC{'File/Locker.pm'};

my $private = [qr/^_/, qr/^(?:CLONE|CLONE_SKIP|DESTROY|STORABLE_freeze|STORABLE_attach)$/, qr/^LOCK_/];
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
