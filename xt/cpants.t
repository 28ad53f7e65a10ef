# A CPANTS (Kwalitee) analysis of the `make dist` tarball: every core and
# extra indicator passes, except those that need a public repository URL,
# which File::Locker does not declare. Ignored indicators (x_cpants in
# META) count as passing, as they do on CPANTS.
use strict;
use warnings;
use File::Temp qw(tempdir);
use Test::More;
use lib 'xt/lib';
use DistTarball qw(make_tarball);

eval { require Module::CPANTS::Analyse; require Module::CPANTS::Kwalitee; 1 }
  or plan skip_all => 'Module::CPANTS::Analyse not installed';
-e 'Makefile' or plan skip_all => 'run perl Makefile.PL first';

my %NEEDS_URL = map { $_ => 1 } qw(meta_yml_has_repository_resource);

my $dir = tempdir('cpants-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my ($tarball, $out) = make_tarball($dir);
ok($tarball, 'make dist wrote a tarball') or diag($out);

my $mca = Module::CPANTS::Analyse->new({ dist => $tarball });
my $error = $mca->unpack;
is($error, undef, 'the tarball unpacks');
$mca->analyse;
$mca->calc_kwalitee;
my ($got, $errors) = @{ $mca->d }{qw(kwalitee error)};

for my $indicator (@{ Module::CPANTS::Kwalitee->new->get_indicators }) {
    my $name = $indicator->{name};
    next if $indicator->{is_disabled} || $indicator->{is_experimental};
    next unless exists $got->{$name};    # needs the CPANTS database
    my $kind = $indicator->{is_extra} ? 'extra' : 'core';
  TODO: {
        local $TODO = 'needs a public repository URL' if $NEEDS_URL{$name};
        ok($got->{$name}, "$kind indicator $name")
          or diag(($errors->{$name} // '') . "\nremedy: " . ($indicator->{remedy} // ''));
    }
}

# What CPANTS does not check: META's index and prerequisites against the code.
my $meta = do {
    require CPAN::Meta;
    CPAN::Meta->load_file($mca->distdir . '/META.json')->as_struct;
};

# PAUSE indexes exactly what provides lists: every package in lib/ is in it,
# or kept out of the index on purpose.
my %unindexed = map { $_ => 1 } @{ $meta->{no_index}{package} // [] };
for my $file (glob('lib/*.pm'), glob('lib/*/*.pm'), glob('lib/*/*/*.pm')) {
    open my $fh, '<', $file or die "open $file: $!";
    for my $package (map { /^package\s+([\w:]+)\s*;/ ? $1 : () } <$fh>) {
        ok($meta->{provides}{$package} || $unindexed{$package},
           "META provides $package ($file), or no_index names it");
    }
}
my %skipped = map { $_ => 1 } @{ $meta->{no_index}{directory} // [] };
is_deeply([sort keys %skipped], [sort qw(t inc xt bench eg src)],
          'no_index covers t, inc, xt, bench, eg and src');
is($meta->{dynamic_config}, 0, 'dynamic_config 0: prerequisites do not depend on the machine');

# Every module a test loads unconditionally (a "use", or a "require" outside
# an eval) is a test or runtime prerequisite.
my %prereq = map { %{ $meta->{prereqs}{$_}{requires} // {} } } qw(runtime test);
my %ours   = map { $_ => 1 } qw(strict warnings lib File::Locker LockerTest);
my %used;
for my $file (glob('t/*.t'), glob('t/lib/*.pm')) {
    open my $fh, '<', $file or die "open $file: $!";
    while (my $line = <$fh>) {
        next if $line =~ /\beval\b/;
        $used{$1}{$file} = 1 if $line =~ /^\s*(?:use|require)\s+([A-Z][\w:]*)[\s;(]/ && !$ours{$1};
    }
}
for my $module (sort keys %used) {
    next if $module =~ /^(?:threads|AnyEvent|IO::Async|Mojo)\b/;    # skipped where missing
    ok(exists $prereq{$module}, "$module is a prerequisite (" . join(', ', sort keys %{ $used{$module} }) . ')');
}
is($prereq{'Test::More'}, '0.96', 'Test::More 0.96, for subtest');

done_testing;
