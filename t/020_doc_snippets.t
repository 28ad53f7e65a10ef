use strict;
use warnings;

# The code a reader pastes first -- the POD SYNOPSIS of File::Locker and the
# tour in README -- runs as printed: each snippet in a fresh perl (or, for
# locker command lines, a fresh sh -e) inside an empty temporary directory,
# and exits 0. A snippet is a run of indented lines; ordinary text, a POD
# command or a README heading ends it. A snippet is skipped only when it
# loads a module that is not installed (an event loop, say), with a reason.

use Test::More;
use Cwd qw(abs_path);
use File::Temp qw(tempdir);

my $root = abs_path('.');
plan skip_all => 'needs the built distribution (blib/)' unless -d "$root/blib/arch";

# Indented runs of LINES, the blank lines inside a run kept, unindented by
# the run's smallest indentation.
sub snippets {
    my (@lines) = @_;
    my (@found, @run);
    my $flush = sub {
        pop @run while @run && $run[-1] !~ /\S/;
        if (@run) {
            my ($indent) = sort { $a <=> $b } map { /^( *)\S/ ? length $1 : () } @run;
            push @found, join '', map { /\S/ ? substr($_, $indent) : "\n" } @run;
        }
        @run = ();
    };
    for my $line (@lines) {
        if    ($line =~ /^\s/ && $line =~ /\S/) { push @run, $line }
        elsif ($line !~ /\S/)                  { push @run, $line if @run }
        else                                   { $flush->() }
    }
    $flush->();
    return @found;
}

sub lines_of {
    my ($file) = @_;
    open my $fh, '<', "$root/$file" or die "open $file: $!";
    return <$fh>;
}

# The POD SYNOPSIS: from "=head1 SYNOPSIS" to the next POD command.
my @pod = lines_of('lib/File/Locker.pm');
my ($from) = grep { $pod[$_] =~ /^=head1\s+SYNOPSIS\b/ } 0 .. $#pod;
die "lib/File/Locker.pm has no SYNOPSIS\n" unless defined $from;
my ($to) = grep { $pod[$_] =~ /^=/ } $from + 1 .. $#pod;
my @cases = map { ['SYNOPSIS', $_] } snippets(@pod[$from + 1 .. ($to // @pod) - 1]);

# The README tour: from its heading to the next heading (a line underlined
# with dashes).
my @readme = lines_of('README');
my ($tour) = grep { $readme[$_] =~ /^A tour\s*$/ } 0 .. $#readme;
die "README has no tour\n" unless defined $tour;
my ($next) = grep { $readme[$_ + 1] =~ /^-{3,}\s*$/ } $tour + 2 .. $#readme - 1;
push @cases, map { ['README tour', $_] } snippets(@readme[$tour + 2 .. ($next // @readme) - 1]);

ok(@cases >= 2, 'snippets found in the SYNOPSIS and the README tour');

# Where the command line lives, for shell snippets.
local $ENV{PATH}     = "$root/blib/script:$ENV{PATH}";
local $ENV{PERL5LIB} = join ':', "$root/blib/lib", "$root/blib/arch",
                       grep { defined && length } $ENV{PERL5LIB};

sub installed {
    my ($module) = @_;
    (my $file = "$module.pm") =~ s{::}{/}g;
    return scalar grep { !ref && -f "$_/$file" } @INC;
}

my $n = 0;
for my $case (@cases) {
    my ($where, $code) = @$case;
    $n++;
    my ($first) = $code =~ /^(\S.*)$/m;
    my $name = "$where, snippet $n ($first)";
    my $shell = !grep { /\S/ && !/^locker\b/ } split /\n/, $code;

  SKIP: {
        unless ($shell) {
            my @missing = grep { !installed($_) }
                          $code =~ /^\s*(?:use|require)\s+([A-Za-z_][\w:]*)/mg;
            skip "$name: needs @missing, not installed", 1 if @missing;
        }
        my $dir = tempdir('snippet-XXXXXX', TMPDIR => 1, CLEANUP => 1);
        my $file = "$dir/snippet." . ($shell ? 'sh' : 'pl');
        open my $fh, '>', $file or die "write $file: $!";
        print {$fh} $code;
        close $fh or die "write $file: $!";
        my @cmd = $shell ? ('sh', '-e', $file) : ($^X, "-Mblib=$root", $file);
        my $pid = open(my $from_child, '-|') // die "fork: $!";
        unless ($pid) {
            chdir $dir or die "chdir $dir: $!";
            open STDERR, '>&', \*STDOUT or die "dup: $!";
            exec @cmd or die "exec $cmd[0]: $!";
        }
        my $output = do { local $/; <$from_child> };
        close $from_child;
        is($?, 0, "$name exits 0") or diag("$code\n--- printed:\n$output");
    }
}

done_testing;
