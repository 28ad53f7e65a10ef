package File::Locker;

use 5.016;
use strict;
use warnings;

our $VERSION = '0.01';

use Exporter 'import';
use Fcntl ();

# The very same constant subs as Fcntl's, so importing both into one package
# is not a redefinition and the values cannot drift apart.
BEGIN {
    no strict 'refs';
    *{$_} = \&{"Fcntl::$_"} for qw(LOCK_SH LOCK_EX LOCK_UN LOCK_NB);
}

our @EXPORT      = ();
our %EXPORT_TAGS = (flock => [qw(LOCK_SH LOCK_EX LOCK_UN LOCK_NB)]);
our @EXPORT_OK   = (@{ $EXPORT_TAGS{flock} }, qw(flock));
$EXPORT_TAGS{all} = [@EXPORT_OK];

require XSLoader;
XSLoader::load('File::Locker', $VERSION);

1;
__END__
