use strict;
use warnings;
use ExtUtils::Manifest qw(manicheck filecheck);
use Test::More;

# Every file MANIFEST lists exists, and every file in the tree is either in
# MANIFEST or matched by MANIFEST.SKIP.
local $ExtUtils::Manifest::Quiet = 1;
is_deeply([manicheck()], [], 'every MANIFEST entry exists');
is_deeply([filecheck()], [], 'every file is in MANIFEST or MANIFEST.SKIP');
done_testing;
