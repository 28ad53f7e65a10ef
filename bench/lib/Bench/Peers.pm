package Bench::Peers;

# The peer modules the bench compares against. None is required: a peer
# that cannot be loaded is skipped, with a note saying why.

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(have_peer peer_notes peer_versions);

# Modules whose import does necessary work (IO::LockedFile loads its
# locking scheme there).
my %import = ('IO::LockedFile' => 1);

my (%loaded, @notes);

# True if MODULE loads; the first failure is noted once.
sub have_peer {
    my ($module) = @_;
    return $loaded{$module} if exists $loaded{$module};
    (my $file = "$module.pm") =~ s{::}{/}g;
    my $ok = eval { local $SIG{__WARN__} = sub { }; require $file; $module->import if $import{$module}; 1 };
    unless ($ok) {
        my $why = $@ =~ /^Can't locate / ? 'not installed' : (split /\n/, $@)[0];
        push @notes, "skipped $module: $why (bench/setup installs the peers: .ci/packages bench)";
    }
    return $loaded{$module} = $ok ? 1 : 0;
}

sub peer_notes { @notes }

# "Module version" for every peer that loaded.
sub peer_versions {
    no strict 'refs';
    return map { "$_ " . (${"${_}::VERSION"} // '?') } grep { $loaded{$_} } sort keys %loaded;
}

1;
