#!perl
# File::Locker::flock side by side with CORE::flock: every handle kind
# against every operation, on fresh fixtures for each, comparing what a
# caller can see -- the result, $!, the warnings (their text, word for word,
# the location aside) and any exception. The operations are those on which
# the contract promises core's behaviour; the ones where this flock is
# stricter (2.5, 2**32 + LOCK_EX, unknown bits) are in t/900.
use strict;
use warnings;

use Test::More;
use Fcntl qw(:flock);
use IO::File ();
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use Symbol ();
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir holder release_and_wait);
use File::Locker ();

my $path = scratch_file();
my $busy = scratch_file();    # held LOCK_EX by another process throughout
my $dir  = scratch_dir();

# ---- handle kinds -------------------------------------------------------

package Glob::Overloader {
    use overload '*{}' => sub { $_[0]{glob} }, fallback => 1;
    sub new { my ($class, $glob) = @_; return bless { glob => $glob }, $class }
}
package Tied::Scalar {
    sub TIESCALAR { my ($class, $value) = @_; return bless [$value], $class }
    sub FETCH     { $_[0][0] }
}
package Minimal::TiedHandle {
    require Tie::Handle;
    our @ISA = ('Tie::Handle');
    sub TIEHANDLE { my ($class) = @_; return bless {}, $class }
}

sub open_ro { my ($p) = @_; open my $fh, '<', $p // $path or die "open: $!"; return $fh }

# Bareword handles, opened afresh by their setup.
our ($BARE_PATH);
sub open_bareword { open(FLOCKBARE, '<', $path) or die "open: $!"; return }

# name => [setup returning the arguments before OPERATION, core call,
# our call]; a call gets (ARGS..., OPERATION). Setups run once for core and
# once for ours, so neither sees the other's lock.
my $plain = [sub { CORE::flock($_[0], $_[1]) }, sub { File::Locker::flock($_[0], $_[1]) }];
my @handles = (
    ['lexical read handle'        => sub { (open_ro()) }, @$plain],
    ['read-write handle'          => sub { open my $fh, '+<', $path or die; ($fh) }, @$plain],
    ['IO::File object'            => sub { (IO::File->new($path, '<') // die) }, @$plain],
    ['glob reference'             => sub { open_bareword(); (\*FLOCKBARE) }, @$plain],
    ['glob'                       => sub { open_bareword(); (*FLOCKBARE) }, @$plain],
    ['IO object (*FH{IO})'        => sub { open_bareword(); (*FLOCKBARE{IO}) }, @$plain],
    ['handle name as a string'    => sub { open_bareword(); ('FLOCKBARE') }, @$plain],
    ['qualified handle name'      => sub { open_bareword(); ('main::FLOCKBARE') }, @$plain],
    ['bareword'                   => sub { open_bareword(); () },
        sub { CORE::flock(FLOCKBARE, $_[0]) }, sub { File::Locker::flock(FLOCKBARE, $_[0]) }],
    ['object overloading *{}'     => sub { (Glob::Overloader->new(open_ro())) }, @$plain],
    ['tied scalar holding a glob' => sub { tie my $t, 'Tied::Scalar', open_ro(); (\$t) },
        sub { CORE::flock(${ $_[0] }, $_[1]) }, sub { File::Locker::flock(${ $_[0] }, $_[1]) }],
    ['tied scalar holding *FH'    => sub { open_bareword(); tie my $t, 'Tied::Scalar', *FLOCKBARE; (\$t) },
        sub { CORE::flock(${ $_[0] }, $_[1]) }, sub { File::Locker::flock(${ $_[0] }, $_[1]) }],
    ['handle on a busy file'      => sub { (open_ro($busy)) }, @$plain],
    ['closed handle'              => sub { my $fh = open_ro(); close $fh; ($fh) }, @$plain],
    ['glob never opened'          => sub { no warnings 'once'; (\*NEVER_OPENED) }, @$plain],
    ['unknown handle name'        => sub { ('NO_SUCH_HANDLE') }, @$plain],
    ['dirhandle'                  => sub { opendir my $dh, $dir or die; ($dh) }, @$plain],
    ['in-memory handle'           => sub { my $buf = 'x'; open my $m, '<', \$buf or die; ($m) }, @$plain],
    ['tied handle'                => sub { my $fh = Symbol::gensym(); tie *$fh, 'Minimal::TiedHandle'; ($fh) }, @$plain],
    ['pipe'                       => sub { pipe(my $r, my $w) or die; ($r) }, @$plain],
    ['socket'                     => sub { socketpair(my $s, my $t, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die; ($s) }, @$plain],
);

# ---- operations -----------------------------------------------------------

# [name, value, whether it waits on a busy lock]
my @operations = (
    ['LOCK_SH', LOCK_SH, 'waits'], ['LOCK_EX', LOCK_EX, 'waits'], ['LOCK_UN', LOCK_UN],
    ['LOCK_SH|LOCK_NB', LOCK_SH | LOCK_NB], ['LOCK_EX|LOCK_NB', LOCK_EX | LOCK_NB],
    ['LOCK_UN|LOCK_NB', LOCK_UN | LOCK_NB],
    [q{'2' (a string)}, '2', 'waits'], ['2.0', 2.0, 'waits'], [q{'2abc' (numeric prefix)}, '2abc', 'waits'],
    [q{'6' (a string)}, '6'],
    ['0', 0], ['LOCK_NB alone', LOCK_NB], ['LOCK_SH|LOCK_EX', LOCK_SH | LOCK_EX],
    [q{'abc'}, 'abc'], [q{''}, ''], ['undef', undef],
);

# ---- running a call ---------------------------------------------------------

# What a caller can observe of CODE(ARGS): result, $!, warnings (text up to
# the location; anonymous glob numbers made equal) and any exception.
sub observe {
    my ($code, @args) = @_;
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    local $SIG{ALRM} = sub { die "no return within 10 s\n" };
    $! = 0;
    alarm 10;
    my $result;
    my $lived = eval { $result = $code->(@args); 1 };
    my $errno = $! + 0;
    alarm 0;
    my $error = $lived ? '' : $@;
    my $at = qr/ at \S+ line \d+(?:, <\S*> (?:line|chunk) \d+)?\.\n\z/;
    return {
        result   => $lived ? $result : 'died',
        errno    => $lived && !$result ? $errno : 0,
        died     => $error =~ s/$at//r,
        warnings => [map { my $w = $_; my $located = $w =~ s/$at//; $w =~ s/\bGEN\d+\b/GEN/g; $located ? $w : "$w (no location)" } @warnings],
    };
}

my $holder = holder($busy, LOCK_EX);

for my $handle (@handles) {
    my ($kind, $setup, $core, $ours) = @$handle;
    subtest $kind => sub {
        for my $operation (@operations) {
            my ($what, $op, $waits) = @$operation;
            next if $waits && $kind =~ /busy/;    # both would wait for ever
            my $theirs = observe($core, $setup->(), $op);
            my $mine   = observe($ours, $setup->(), $op);
            is_deeply $mine, $theirs, "$what: same result, \$!, warnings and exception as CORE::flock"
              or diag explain { 'CORE::flock' => $theirs, 'File::Locker::flock' => $mine };
        }
    };
}

# The variable core names in an "uninitialized" warning is named here too.
subtest 'undefined OPERATION in a named variable' => sub {
    my %h;
    our $global;
    my @cases = (
        ['a lexical', sub { my $op; CORE::flock($_[0], $op) }, sub { my $op; File::Locker::flock($_[0], $op) }],
        ['a package variable', sub { CORE::flock($_[0], $global) }, sub { File::Locker::flock($_[0], $global) }],
        ['a hash element', sub { CORE::flock($_[0], $h{op}) }, sub { File::Locker::flock($_[0], $h{op}) }],
    );
    for my $case (@cases) {
        my ($what, $core, $ours) = @$case;
        my $theirs = observe($core, open_ro());
        my $mine   = observe($ours, open_ro());
        is_deeply $mine, $theirs, "$what: the same warning as CORE::flock"
          or diag explain { 'CORE::flock' => $theirs, 'File::Locker::flock' => $mine };
    }
    like observe(sub { my $op; File::Locker::flock($_[0], $op) }, open_ro())->{warnings}[0],
      qr/^Use of uninitialized value \$op in flock\b/, 'the lexical is named, as core names it';
};

release_and_wait($holder);
done_testing;
