package DistTarball;

# make_tarball(DIR): runs `make dist` and moves the tarball it made into
# DIR; returns the tarball's new path, or undef and the output of make.
# Needs a Makefile (perl Makefile.PL first).

use strict;
use warnings;
use Exporter 'import';

our @EXPORT_OK = qw(make_tarball);

sub make_tarball {
    my ($dir) = @_;
    unlink glob 'File-Locker-*.tar.gz';    # gzip will not overwrite an old one
    my $out = qx{make dist 2>&1};
    my ($made) = $out =~ /^Created (\S+\.tar\.gz)/m;
    return ("$dir/$made", $out) if $made && rename $made, "$dir/$made";
    return (undef, $out);
}

1;
