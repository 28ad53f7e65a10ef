use strict;
use warnings;

# Bad input to every public function and Guard method, one table row per
# input. Each row states ONE expected outcome, taken from the contract (the
# Errors section of the design and the POD):
#
#   croaks(RE)     an exception matching RE; lock_file, lock_range,
#                  range_conflict, lock_holders and Guard methods name the
#                  function first; flock croaks only where CORE::flock does
#   fails(ERRNO)   false / undef / empty list, with $! == ERRNO
#   gives(...)     success of a stated kind
#
# and every row also checks: no exception escapes the row (the call runs in
# an eval), the call returns within $PATIENCE seconds, the warnings are
# exactly the expected ones, and the process has as many descriptors after
# the call (its result dropped) as before it (the row's own fixtures are made
# before the first count). Rows marked todo are known deviations from the
# contract.

use Test::More;
use Fcntl qw(:flock);
use POSIX qw(EBADF EINVAL ENOENT ELOOP EISDIR ENXIO mkfifo);
use Scalar::Util qw(blessed);
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC pack_sockaddr_un);
use Symbol ();
use Cwd ();
use lib 't/lib';
use LockerTest qw(scratch_file scratch_dir fd_count);
use File::Locker qw(lock_file lock_range range_conflict lock_holders);

my $PATIENCE = 10;    # seconds a single call may take before the row fails
my $GUARD    = 'File::Locker::Guard';
my $HERE     = __FILE__;
my $start_dir = Cwd::getcwd();

my $INF = 9**9**9;
my $NAN = $INF / $INF;

# ---- fixtures ---------------------------------------------------------

# A handle with no descriptor behind it: tied to a class that does nothing.
package Minimal::TiedHandle {
    require Tie::Handle;
    our @ISA = ('Tie::Handle');
    sub TIEHANDLE { my ($class) = @_; return bless {}, $class }
}

# Not a guard, although it claims to be one.
package Guard::Imitation {
    our @ISA = ('File::Locker::Guard');
}

my $path = scratch_file();
my $dir  = scratch_dir();
my $missing = "$dir/no-such-file";
my $missing_dir_path = "$dir/no-such-dir/lock";
my $symlink = "$dir/symlink-to-lock";
symlink $path, $symlink or die "symlink $symlink: $!";

sub open_rw { open my $fh, '+<', $path or die "open $path: $!"; return $fh }
sub open_ro { open my $fh, '<',  $path or die "open $path: $!"; return $fh }

sub closed_handle {
    open my $closed, '<', $path or die "open $path: $!";
    close $closed;
    return $closed;
}

sub unopened_handle { no warnings 'once'; return \*NEVER_OPENED }

sub tied_handle {
    my $fh = Symbol::gensym();
    tie *$fh, 'Minimal::TiedHandle';
    return $fh;
}

sub memory_handle {
    my $buf = "in memory\n";
    open my $mem, '<', \$buf or die "open in-memory: $!";
    return $mem;
}

sub dir_handle { opendir my $dh, $dir or die "opendir $dir: $!"; return $dh }

# (reader, writer)
sub a_pipe { pipe(my $r, my $w) or die "pipe: $!"; return ($r, $w) }

sub a_socketpair {
    socketpair(my $one, my $other, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die "socketpair: $!";
    return ($one, $other);
}

# A FIFO and a listening Unix socket at a PATH: neither is a lock file, and
# opening a FIFO could block.
my $fifo = "$dir/a-fifo";
mkfifo($fifo, 0666) or die "mkfifo $fifo: $!";
my $socket_path = "$dir/a-socket";
socket(my $listener, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die "socket: $!";
bind($listener, pack_sockaddr_un($socket_path)) or die "bind $socket_path: $!";

# A handle object that overloads *{} (as some IO wrappers do), and a tied
# scalar whose value is a glob.
package Glob::Overloader {
    use overload '*{}' => sub { $_[0]{glob} }, fallback => 1;
    sub new { my ($class, $fh) = @_; return bless { glob => $fh }, $class }
}
package Tied::Scalar {
    sub TIESCALAR { my ($class, $value) = @_; return bless [$value], $class }
    sub FETCH     { $_[0][0] }
}
sub overloaded_handle { return Glob::Overloader->new(open_ro()) }
sub tied_scalar_glob  { tie my $t, 'Tied::Scalar', open_ro(); return \$t }

# A guard on a fresh file. The [ ] copies the returned reference into a new
# scalar (see the rows under "a guard survives ordinary assignment").
sub guard_on {
    my ($kind, $mode) = @_;
    my $box = [$kind eq 'range' ? lock_range(scratch_file(), $mode, 0, 10) : lock_file(scratch_file(), $mode)];
    return $box->[0] // die "fixture $kind lock: $!";
}

sub released_guard {
    my ($kind) = @_;
    my $guard = guard_on($kind, LOCK_SH);
    $guard->release;
    return $guard;
}

sub handle_guard {
    my ($fh) = @_;
    my $box = [lock_file($fh, LOCK_SH)];
    return ($box->[0] // die("fixture handle lock: $!"), $fh);
}

# ---- expectations -----------------------------------------------------

sub croaks { my ($re) = @_; return { croak => $re } }
sub fails  { my ($errno) = @_; return { fail => $errno } }
sub gives  { my ($what, $check) = @_; return { ok => [$what, $check] } }

my $A_GUARD = gives('a guard holding its lock', sub {
    my ($got) = @_;
    my $guard = $got->[0];
    return blessed($guard) && $guard->isa($GUARD) && $guard->is_locked;
});
my $TRUE      = gives('1', sub { my ($got) = @_; return @$got == 1 && defined $got->[0] && $got->[0] eq '1' });
my $FALSE     = gives('false', sub { my ($got) = @_; return @$got == 1 && !$got->[0] });
my $UNDEF     = gives('undef', sub { my ($got) = @_; return @$got == 1 && !defined $got->[0] });
my $NO_CONFLICT = gives('undef with $! == 0 (no conflict)',
    sub { my ($got, $errno) = @_; return @$got == 1 && !defined $got->[0] && $errno == 0 });
my $NO_HOLDERS = gives('an empty list with $! == 0 (nobody holds a lock)',
    sub { my ($got, $errno) = @_; return !@$got && $errno == 0 });

my $FLOCK_UNOPENED = qr/^flock\(\) on unopened filehandle\b/;

# ---- the table --------------------------------------------------------

# Row fields: name; setup (returns the call's arguments, made before the
# descriptors are counted); call; want; warns (regexes, in order); list
# (call in list context); todo; core (CORE::flock's version of the call,
# compared with ours on fresh fixtures); at_caller (the croak must be
# reported at the caller's line, as Carp's croak does).
my @rows;
sub row { my ($name, %row) = @_; push @rows, { name => $name, warns => [], %row } }

# -- flock: mirrors CORE::flock ------------------------------------------

# The prototype is (*$;$): a TIMEOUT is passed only when the row gives one.
my $flock = sub { @_ > 2 ? File::Locker::flock($_[0], $_[1], $_[2]) : File::Locker::flock($_[0], $_[1]) };

row 'flock: undef FH croaks like core',
    setup => sub { (undef, LOCK_EX) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => croaks(qr/^Can't use an undefined value as a symbol reference\b/);
for my $ref (['hash', sub { {} }], ['array', sub { [] }], ['code', sub { sub { 1 } }], ['scalar', sub { \(my $s = 1) }]) {
    my ($what, $make) = @$ref;
    row "flock: $what reference croaks like core",
        setup => sub { ($make->(), LOCK_EX) }, call => $flock,
        core => sub { CORE::flock($_[0], $_[1]) },
        want => croaks(qr/^Not a GLOB reference\b/);
}
row 'flock: closed handle',
    setup => sub { (closed_handle(), LOCK_EX) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EBADF), warns => [qr/^flock\(\) on closed filehandle \$closed at /];
row 'flock: a glob never opened',
    setup => sub { (unopened_handle(), LOCK_EX) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EBADF), warns => [qr/^flock\(\) on unopened filehandle NEVER_OPENED at /];
row 'flock: tied handle',
    setup => sub { (tied_handle(), LOCK_EX) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EBADF), warns => [$FLOCK_UNOPENED];
row 'flock: in-memory handle',
    setup => sub { (memory_handle(), LOCK_EX) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EBADF);
row 'flock: dirhandle',
    setup => sub { (dir_handle(), LOCK_SH) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EBADF),
    warns => [qr/^flock\(\) on unopened filehandle \$dh at /, qr/^\t\(Are you trying to call flock\(\) on dirhandle \$dh\?\)$/];
row 'flock: empty string (no such handle)',
    setup => sub { ('', LOCK_EX) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EBADF), warns => [$FLOCK_UNOPENED];
row 'flock: a path is not a handle name',
    setup => sub { ($missing, LOCK_EX) }, call => $flock,
    want => fails(EBADF), warns => [$FLOCK_UNOPENED];
row 'flock: a directory path is not a handle name',
    setup => sub { ($dir, LOCK_EX) }, call => $flock,
    want => fails(EBADF), warns => [$FLOCK_UNOPENED];
row 'flock: descriptor number that is not open',
    setup => sub { (9999, LOCK_EX) }, call => $flock,
    want => fails(EBADF);
row 'flock: negative number is not a descriptor',
    setup => sub { (-1, LOCK_EX) }, call => $flock,
    want => fails(EBADF), warns => [$FLOCK_UNOPENED];
row 'flock: huge number is not a descriptor',
    setup => sub { (1e30, LOCK_EX) }, call => $flock,
    want => fails(EBADF), warns => [$FLOCK_UNOPENED];
row 'flock: pipe reader, LOCK_EX',
    setup => sub { a_pipe() }, call => sub { File::Locker::flock($_[0], LOCK_EX) },
    want => $TRUE;
row 'flock: pipe writer, LOCK_SH|LOCK_NB',
    setup => sub { a_pipe() }, call => sub { File::Locker::flock($_[1], LOCK_SH | LOCK_NB) },
    want => $TRUE;
row 'flock: socket, LOCK_EX|LOCK_NB',
    setup => sub { a_socketpair() }, call => sub { File::Locker::flock($_[0], LOCK_EX | LOCK_NB) },
    core => sub { CORE::flock($_[0], LOCK_EX | LOCK_NB) },
    want => $TRUE;

for my $op (['0', 0], ['LOCK_NB alone', LOCK_NB], ['LOCK_SH|LOCK_EX', LOCK_SH | LOCK_EX],
            ['LOCK_SH|LOCK_EX|LOCK_NB', LOCK_SH | LOCK_EX | LOCK_NB]) {
    my ($what, $value) = @$op;
    row "flock: OPERATION $what",
        setup => sub { (open_ro(), $value) }, call => $flock,
        core => sub { CORE::flock($_[0], $_[1]) },
        want => fails(EINVAL);
}
# Core hands these to the kernel, which ignores unknown bits (an array ref is
# its address); the POD says this flock refuses them.
for my $op (['-1', -1], ['1e30', 1e30], ['64 (an unknown bit)', 64], ['an array ref', []]) {
    my ($what, $value) = @$op;
    row "flock: OPERATION $what", setup => sub { (open_ro(), $value) }, call => $flock, want => fails(EINVAL);
}
# Not exactly LOCK_SH, LOCK_EX or LOCK_UN (| LOCK_NB): core would truncate
# these to LOCK_EX and lock; the contract says EINVAL.
for my $op (['2.5', 2.5], [q{'2.5'}, '2.5'], ['2**32 + LOCK_EX', 2**32 + LOCK_EX],
            ['2**64 + LOCK_EX', 2**64 + LOCK_EX], ['LOCK_EX + 0.000001', LOCK_EX + 0.000001],
            ['+Inf', $INF], ['NaN', $NAN]) {
    my ($what, $value) = @$op;
    row "flock: OPERATION $what", setup => sub { (open_ro(), $value) }, call => $flock, want => fails(EINVAL);
}
row 'flock: OPERATION 2.0 is exactly LOCK_EX',
    setup => sub { (open_ro(), 2.0) }, call => $flock, want => $TRUE;
row q{flock: OPERATION '2' is exactly LOCK_EX},
    setup => sub { (open_ro(), '2') }, call => $flock, want => $TRUE;
# The warnings read as core's, word for word ("in flock", not "in
# subroutine entry"), with the variable named where core names it.
row q{flock: OPERATION 'abc'},
    setup => sub { (open_ro(), 'abc') }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EINVAL), warns => [qr/^Argument "abc" isn't numeric in flock at /];
row 'flock: OPERATION undef',
    setup => sub { (open_ro(), undef) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => fails(EINVAL), warns => [qr/^Use of uninitialized value \$_\[1\] in flock at /];
row 'flock: OPERATION is an undefined lexical',
    setup => sub { (open_ro()) }, call => sub { my $op; File::Locker::flock($_[0], $op) },
    core => sub { my $op; CORE::flock($_[0], $op) },
    want => fails(EINVAL), warns => [qr/^Use of uninitialized value \$op in flock at /];
row 'flock: closed handle and OPERATION undef (both warnings, in order)',
    setup => sub { (closed_handle()) }, call => sub { my $op; File::Locker::flock($_[0], $op) },
    core => sub { my $op; CORE::flock($_[0], $op) },
    want => fails(EBADF),
    warns => [qr/^Use of uninitialized value \$op in flock at /, qr/^flock\(\) on closed filehandle \$closed at /];
row 'flock: OPERATION under FATAL numeric warnings dies as core does',
    setup => sub { (open_ro(), 'abc') },
    call => sub { use warnings FATAL => 'numeric'; File::Locker::flock($_[0], $_[1]) },
    core => sub { use warnings FATAL => 'numeric'; CORE::flock($_[0], $_[1]) },
    want => croaks(qr/^Argument "abc" isn't numeric in flock at /);

# Handles core accepts: an object overloading *{} and a tied scalar holding
# a glob.
row 'flock: object overloading *{}',
    setup => sub { (overloaded_handle(), LOCK_SH) }, call => $flock,
    core => sub { CORE::flock($_[0], $_[1]) },
    want => $TRUE;
row 'flock: tied scalar holding a glob',
    setup => sub { (tied_scalar_glob(), LOCK_SH) }, call => sub { File::Locker::flock(${ $_[0] }, $_[1]) },
    core => sub { CORE::flock(${ $_[0] }, $_[1]) },
    want => $TRUE;

for my $timeout (['-1', -1], ['NaN', $NAN], ['-Inf', -$INF], [q{'abc'}, 'abc'], [q{''}, ''],
                 ['a hash ref', {}], ['-0.5', -0.5]) {
    my ($what, $value) = @$timeout;
    row "flock: TIMEOUT $what",
        setup => sub { (open_ro(), LOCK_EX, $value) }, call => $flock,
        want => fails(EINVAL);
}
for my $timeout (['+Inf', $INF], ['1e30', 1e30], ['undef', undef]) {
    my ($what, $value) = @$timeout;
    row "flock: TIMEOUT $what on a free lock",
        setup => sub { (open_ro(), LOCK_EX, $value) }, call => $flock,
        want => $TRUE;
}

# -- lock_file and lock_range: PATH or FH --------------------------------

# function name => code taking (TARGET, MODE, OPTIONS...)
my %lockers = (
    lock_file  => sub { lock_file($_[0], $_[1], @_[2 .. $#_]) },
    lock_range => sub { lock_range($_[0], $_[1], 0, 10, @_[2 .. $#_]) },
);

for my $name (sort keys %lockers) {
    my $lock = $lockers{$name};

    row "$name: undef PATH", setup => sub { (undef, LOCK_EX) }, call => $lock,
        want => croaks(qr/^$name: PATH or FH is undefined/);
    row "$name: empty PATH", setup => sub { ('', LOCK_EX) }, call => $lock,
        want => croaks(qr/^$name: PATH is empty/);
    row "$name: PATH with a NUL byte", setup => sub { ("$dir/a\0b", LOCK_EX) }, call => $lock,
        want => croaks(qr/^$name: PATH contains a NUL byte/);
    for my $ref (['HASH', sub { {} }], ['ARRAY', sub { [] }], ['CODE', sub { sub { 1 } }],
                 ['SCALAR', sub { \(my $s = $path) }], ['HASH', sub { bless {}, 'Not::A::Handle' }]) {
        my ($type, $make) = @$ref;
        my $what = $make->();
        my $label = blessed($what) ? "an object of another class" : lc($type) . ' reference';
        row "$name: $label as PATH", setup => sub { ($make->(), LOCK_EX) }, call => $lock,
            want => croaks(qr/^$name: PATH or FH expected, not a $type reference/);
    }

    row "$name: missing file with create => 0",
        setup => sub { ($missing, LOCK_EX) }, call => sub { $lock->(@_, create => 0) },
        want => fails(ENOENT);
    row "$name: file in a missing directory",
        setup => sub { ($missing_dir_path, LOCK_EX) }, call => $lock,
        want => fails(ENOENT);
    row "$name: symlink without follow_symlinks",
        setup => sub { ($symlink, LOCK_EX) }, call => $lock,
        want => fails(ELOOP);

    for my $handle (['closed handle', \&closed_handle], ['glob never opened', \&unopened_handle],
                    ['tied handle', \&tied_handle], ['in-memory handle', \&memory_handle],
                    ['dirhandle', \&dir_handle]) {
        my ($what, $make) = @$handle;
        row "$name: $what", setup => sub { ($make->(), LOCK_SH) }, call => $lock, want => fails(EBADF);
    }

    row "$name: pipe writer, LOCK_EX",
        setup => sub { my ($r, $w) = a_pipe(); ($w, LOCK_EX, $r) }, call => sub { $lock->(@_[0, 1]) },
        want => $A_GUARD;
    row "$name: socket, LOCK_EX",
        setup => sub { a_socketpair() }, call => sub { $lock->($_[0], LOCK_EX) },
        want => $A_GUARD;

    for my $mode (['0', 0], ['LOCK_NB alone', LOCK_NB], ['LOCK_SH|LOCK_EX', LOCK_SH | LOCK_EX],
                  ['LOCK_UN', LOCK_UN], ['LOCK_UN|LOCK_NB', LOCK_UN | LOCK_NB], [q{'abc'}, 'abc'],
                  ['-1', -1], ['1e30', 1e30], ['undef', undef], [q{''}, ''], ['NaN', $NAN],
                  ['+Inf', $INF], ['an array ref', []], ['2.5', 2.5], ['1.5', 1.5], [q{'2.5'}, '2.5'],
                  ['2**32 + LOCK_EX', 2**32 + LOCK_EX], ['LOCK_EX + 0.000001', LOCK_EX + 0.000001]) {
        my ($what, $value) = @$mode;
        row "$name: MODE $what", setup => sub { ($path, $value) }, call => $lock,
            want => croaks(qr/^$name: MODE\b/);
    }
    row "$name: MODE 2.0 is exactly LOCK_EX", setup => sub { (scratch_file(), 2.0) }, call => $lock,
        want => $A_GUARD;

    # Opening never blocks, and a FIFO or a socket is not a lock file.
    for my $timeout ([], [timeout => 1], [timeout => 0]) {
        my $with = @$timeout ? " (timeout => $timeout->[1])" : '';
        row "$name: FIFO at PATH$with", setup => sub { ($fifo, LOCK_EX) },
            call => sub { $lock->(@_, @$timeout) }, want => fails(ENXIO);
        row "$name: socket at PATH$with", setup => sub { ($socket_path, LOCK_SH) },
            call => sub { $lock->(@_, @$timeout) }, want => fails(ENXIO);
    }
    row "$name: FIFO at PATH, create => 0", setup => sub { ($fifo, LOCK_SH) },
        call => sub { $lock->(@_, create => 0) }, want => fails(ENXIO);

    # A PATH given as a character string comes back from ->path as the same
    # string, not as its UTF-8 bytes.
    for my $wide (['U+263A', "smiley-\x{263A}"], ['an upgraded Latin-1 string', do { my $n = "caf\x{e9}"; utf8::upgrade($n); $n }]) {
        my ($what, $name_part) = @$wide;
        row "$name: path() of a PATH with $what", setup => sub { ("$dir/$name_part", LOCK_EX) },
            call => sub { my $box = [$lock->(@_)]; [$box->[0], $_[0]] },
            want => gives('the PATH passed in', sub {
                my ($guard, $given) = @{ $_[0][0] };
                return blessed($guard) && $guard->path eq $given && length($guard->path) == length($given);
            });
    }

    for my $timeout (['-1', -1], ['NaN', $NAN], ['-Inf', -$INF], [q{'abc'}, 'abc'], [q{''}, ''],
                     ['a hash ref', {}]) {
        my ($what, $value) = @$timeout;
        row "$name: timeout $what", setup => sub { ($path, LOCK_EX) },
            call => sub { $lock->(@_, timeout => $value) },
            want => croaks(qr/^$name: timeout\b/);
    }
    for my $timeout (['+Inf', $INF], ['1e30', 1e30], ['undef', undef]) {
        my ($what, $value) = @$timeout;
        row "$name: timeout $what on a free lock", setup => sub { (scratch_file(), LOCK_EX) },
            call => sub { $lock->(@_, timeout => $value) },
            want => $A_GUARD;
    }

    row "$name: unknown option", setup => sub { ($path, LOCK_EX) },
        call => sub { $lock->(@_, bogus => 1) },
        want => croaks(qr/^$name: unknown option 'bogus'/);
    # Longer than any small-string buffer: an engine copy of the name alive
    # at the croak would be a heap block lost (xt/valgrind.t sees it).
    my $long = 'an_option_name_of_39_characters_long_xx';
    row "$name: unknown option with a long name", setup => sub { ($path, LOCK_EX) },
        call => sub { $lock->(@_, $long => 1) },
        want => croaks(qr/^$name: unknown option '$long'/);
    row "$name: unknown option named like the issue's", setup => sub { ($path, LOCK_EX) },
        call => sub { $lock->(@_, 'a_thirty_nine_character_unknown_option_' => 1) },
        want => croaks(qr/^$name: unknown option 'a_thirty_nine_character_unknown_option_'/);
    row "$name: option names are case-sensitive", setup => sub { ($path, LOCK_EX) },
        call => sub { $lock->(@_, Timeout => 1) },
        want => croaks(qr/^$name: unknown option 'Timeout'/);
    row "$name: odd option list (a lone key)", setup => sub { ($path, LOCK_EX) },
        call => sub { $lock->(@_, 'timeout') },
        want => croaks(qr/^$name: odd number of option arguments/);
    row "$name: odd option list (pair and a key)", setup => sub { ($path, LOCK_EX) },
        call => sub { $lock->(@_, timeout => 1, 'create') },
        want => croaks(qr/^$name: odd number of option arguments/);
    for my $perms ([q{'abc'}, 'abc'], ['-1', -1], ['010000', 010000], ['1.5', 1.5], ['undef', undef]) {
        my ($what, $value) = @$perms;
        row "$name: perms $what", setup => sub { ($path, LOCK_EX) },
            call => sub { $lock->(@_, perms => $value) },
            want => croaks(qr/^$name: perms\b/);
    }
    for my $option ([create => 1], [create => 0], [perms => 0600], [follow_symlinks => 1], [unlink => 1], [unlink => 0]) {
        row "$name: PATH-only option $option->[0] => $option->[1] with a handle",
            setup => sub { (open_rw(), LOCK_EX) }, call => sub { $lock->(@_, @$option) },
            want => croaks(qr/^$name: .*\b$option->[0]\b.*\bPATH only/);
    }
}

row 'lock_file: missing file is created by default',
    setup => sub { ("$dir/created-by-lock_file", LOCK_EX) },
    call => sub { my $box = [lock_file(@_)]; [$box->[0], -f $_[0]] },
    want => gives('a guard, and the file exists', sub {
        my ($got) = @_;
        my ($guard, $exists) = @{ $got->[0] };
        return blessed($guard) && $guard->is_locked && $exists;
    });
row 'lock_file: a directory can be locked (LOCK_EX)',
    setup => sub { ($dir, LOCK_EX) }, call => $lockers{lock_file}, want => $A_GUARD;
row 'lock_file: a directory can be locked (LOCK_SH)',
    setup => sub { ($dir, LOCK_SH) }, call => $lockers{lock_file}, want => $A_GUARD;
row 'lock_file: a descriptor number is a PATH, not a descriptor',
    setup => sub { my $fh = open_rw(); (fileno($fh), LOCK_EX, $fh) },
    call => sub {
        my ($number, $mode) = @_;
        chdir $dir or die "chdir $dir: $!";
        my $box = eval { [lock_file($number, $mode)] };
        my $error = $@;
        chdir $start_dir or die "chdir $start_dir: $!";
        die $error if $error;
        return [$box->[0], $number];
    },
    want => gives('a guard on the file of that name', sub {
        my ($got) = @_;
        my ($guard, $number) = @{ $got->[0] };
        return blessed($guard) && $guard->is_locked && $guard->path eq $number && -f "$dir/$number";
    });
row 'lock_file: read-only handle, LOCK_EX (flock(2) allows it)',
    setup => sub { (open_ro(), LOCK_EX) }, call => $lockers{lock_file}, want => $A_GUARD;
row 'lock_file: pipe reader, LOCK_SH',
    setup => sub { a_pipe() }, call => sub { lock_file($_[0], LOCK_SH) }, want => $A_GUARD;

# -- lock_range: OFFSET and LENGTH -----------------------------------------

my @bad_numbers = (
    ['-1', -1, 'must be a non-negative integer'],
    ['-Inf', -$INF, 'must be a non-negative integer'],
    ['NaN', $NAN, 'must be a non-negative integer'],
    [q{'abc'}, 'abc', 'must be a non-negative integer'],
    [q{''}, '', 'must be a non-negative integer'],
    ['undef', undef, 'must be a non-negative integer'],
    ['1.5', 1.5, 'must be a non-negative integer'],
    [q{'0x10'}, '0x10', 'must be a non-negative integer'],
    ['an array ref', [], 'must be a non-negative integer'],
    ['+Inf', $INF, 'is too large'],
    ['1e30', 1e30, 'is too large'],
    [q{'1e30'}, '1e30', 'is too large'],
    ['2**63', 2**63, 'is too large'],
    [q{'9223372036854775808'}, '9223372036854775808', 'is too large'],
    ['2**64-1', 18446744073709551615, 'is too large'],
);
for my $function (['lock_range', sub { lock_range($_[0], LOCK_SH, @_[1, 2]) }],
                  ['range_conflict', sub { range_conflict($_[0], LOCK_SH, @_[1, 2]) }]) {
    my ($name, $call) = @$function;
    for my $bad (@bad_numbers) {
        my ($what, $value, $message) = @$bad;
        row "$name: OFFSET $what", setup => sub { ($path, $value, 10) }, call => $call,
            want => croaks(qr/^$name: OFFSET $message/);
        row "$name: LENGTH $what", setup => sub { ($path, 0, $value) }, call => $call,
            want => croaks(qr/^$name: LENGTH $message/);
    }
    for my $sum (['2**62 + (2**62+1)', 2**62, 4611686018427387905], ['(2**63-1) + 2', 9223372036854775807, 2],
                 [q{'9223372036854775807' + '2'}, '9223372036854775807', '2']) {
        my ($what, $offset, $length, $todo) = @$sum;
        row "$name: OFFSET + LENGTH overflows: $what", setup => sub { ($path, $offset, $length) }, call => $call,
            want => croaks(qr/^$name: OFFSET \+ LENGTH is too large/), todo => $todo;
    }
}
# Offsets often arrive as strings (command lines, files); they must be exact.
row q{lock_range: OFFSET '9007199254740993' (2**53+1) is taken exactly},
    setup => sub { (scratch_file(), '9007199254740993', 1) },
    call => sub { lock_range($_[0], LOCK_SH, @_[1, 2]) },
    want => gives('a guard at offset 9007199254740993', sub { blessed($_[0][0]) && $_[0][0]->offset eq '9007199254740993' });
row q{lock_range: LENGTH '9007199254740993' (2**53+1) is taken exactly},
    setup => sub { (scratch_file(), 0, '9007199254740993') },
    call => sub { lock_range($_[0], LOCK_SH, @_[1, 2]) },
    want => gives('a guard of length 9007199254740993', sub { blessed($_[0][0]) && $_[0][0]->length eq '9007199254740993' });
row q{lock_range: OFFSET '9223372036854775807' (2**63-1) with LENGTH 0 fits},
    setup => sub { (scratch_file(), '9223372036854775807', 0) },
    call => sub { lock_range($_[0], LOCK_SH, @_[1, 2]) },
    want => $A_GUARD;
row 'lock_range: OFFSET + LENGTH = 2**63 (up to the last byte) fits',
    setup => sub { (scratch_file(), 2**62, 2**62) },
    call => sub { lock_range($_[0], LOCK_SH, @_[1, 2]) }, want => $A_GUARD;
row 'lock_range: OFFSET + LENGTH = 2**63-1 fits',
    setup => sub { (scratch_file(), 9223372036854775806, 1) },
    call => sub { lock_range($_[0], LOCK_SH, @_[1, 2]) }, want => $A_GUARD;
row 'lock_range: read-only handle, LOCK_EX',
    setup => sub { (open_ro(), LOCK_EX) }, call => $lockers{lock_range}, want => fails(EBADF);
row 'lock_range: directory PATH, LOCK_SH',
    setup => sub { ($dir, LOCK_SH) }, call => $lockers{lock_range}, want => $A_GUARD;
# LOCK_EX ranges need write access: the error is that of opening for
# writing, not EBADF from a read-only fallback.
row 'lock_range: directory PATH, LOCK_EX (cannot be opened for writing)',
    setup => sub { ($dir, LOCK_EX) }, call => $lockers{lock_range}, want => fails(EISDIR);
# Linux takes fcntl(2) record locks on pipes, with the usual access rules.
row 'lock_range: pipe reader, LOCK_SH',
    setup => sub { a_pipe() }, call => sub { lock_range($_[0], LOCK_SH, 0, 1) }, want => $A_GUARD;
row 'lock_range: pipe reader, LOCK_EX (not open for writing)',
    setup => sub { a_pipe() }, call => sub { lock_range($_[0], LOCK_EX, 0, 1) }, want => fails(EBADF);
row 'lock_range: pipe writer, LOCK_SH (not open for reading)',
    setup => sub { a_pipe() }, call => sub { lock_range($_[1], LOCK_SH, 0, 1) }, want => fails(EBADF);
row 'lock_range: socket, LOCK_SH, LENGTH 0',
    setup => sub { a_socketpair() }, call => sub { lock_range($_[0], LOCK_SH, 0, 0) }, want => $A_GUARD;

# -- range_conflict -------------------------------------------------------

my $conflict = sub { range_conflict($_[0], $_[1], 0, 10) };
row 'range_conflict: undef PATH', setup => sub { (undef, LOCK_EX) }, call => $conflict,
    want => croaks(qr/^range_conflict: PATH or FH is undefined/);
row 'range_conflict: empty PATH', setup => sub { ('', LOCK_EX) }, call => $conflict,
    want => croaks(qr/^range_conflict: PATH is empty/);
row 'range_conflict: PATH with a NUL byte', setup => sub { ("$dir/a\0b", LOCK_EX) }, call => $conflict,
    want => croaks(qr/^range_conflict: PATH contains a NUL byte/);
for my $ref (['HASH', sub { {} }], ['ARRAY', sub { [] }], ['CODE', sub { sub { 1 } }], ['SCALAR', sub { \(my $s = $path) }]) {
    my ($type, $make) = @$ref;
    row 'range_conflict: ' . lc($type) . ' reference as PATH', setup => sub { ($make->(), LOCK_EX) }, call => $conflict,
        want => croaks(qr/^range_conflict: PATH or FH expected, not a $type reference/);
}
for my $mode (['0', 0], ['LOCK_NB alone', LOCK_NB], ['LOCK_SH|LOCK_EX', LOCK_SH | LOCK_EX], ['LOCK_UN', LOCK_UN],
              [q{'abc'}, 'abc'], ['-1', -1], ['1e30', 1e30], ['undef', undef], ['NaN', $NAN]) {
    my ($what, $value) = @$mode;
    row "range_conflict: MODE $what", setup => sub { ($path, $value) }, call => $conflict,
        want => croaks(qr/^range_conflict: MODE\b/);
}
row 'range_conflict: missing PATH', setup => sub { ($missing, LOCK_EX) }, call => $conflict, want => fails(ENOENT);
row 'range_conflict: file in a missing directory', setup => sub { ($missing_dir_path, LOCK_EX) }, call => $conflict,
    want => fails(ENOENT);
for my $handle (['closed handle', \&closed_handle], ['glob never opened', \&unopened_handle],
                ['tied handle', \&tied_handle], ['in-memory handle', \&memory_handle], ['dirhandle', \&dir_handle]) {
    my ($what, $make) = @$handle;
    row "range_conflict: $what", setup => sub { ($make->(), LOCK_EX) }, call => $conflict, want => fails(EBADF);
}
row 'range_conflict: FIFO at PATH', setup => sub { ($fifo, LOCK_EX) }, call => $conflict, want => fails(ENXIO);
row 'range_conflict: socket at PATH', setup => sub { ($socket_path, LOCK_SH) }, call => $conflict, want => fails(ENXIO);
row 'range_conflict: directory PATH', setup => sub { ($dir, LOCK_EX) }, call => $conflict, want => $NO_CONFLICT;
row 'range_conflict: pipe', setup => sub { a_pipe() }, call => sub { range_conflict($_[0], LOCK_EX, 0, 1) },
    want => $NO_CONFLICT;
row 'range_conflict: socket', setup => sub { a_socketpair() }, call => sub { range_conflict($_[0], LOCK_EX, 0, 1) },
    want => $NO_CONFLICT;

# -- lock_holders -----------------------------------------------------------

my $holders = sub { lock_holders($_[0]) };
row 'lock_holders: undef PATH', setup => sub { (undef) }, call => $holders, list => 1,
    want => croaks(qr/^lock_holders: PATH or FH is undefined/);
row 'lock_holders: empty PATH', setup => sub { ('') }, call => $holders, list => 1,
    want => croaks(qr/^lock_holders: PATH is empty/);
row 'lock_holders: PATH with a NUL byte', setup => sub { ("$dir/a\0b") }, call => $holders, list => 1,
    want => croaks(qr/^lock_holders: PATH contains a NUL byte/);
for my $ref (['HASH', sub { {} }], ['ARRAY', sub { [] }], ['CODE', sub { sub { 1 } }], ['SCALAR', sub { \(my $s = $path) }]) {
    my ($type, $make) = @$ref;
    row 'lock_holders: ' . lc($type) . ' reference as PATH', setup => sub { ($make->()) }, call => $holders, list => 1,
        want => croaks(qr/^lock_holders: PATH or FH expected, not a $type reference/);
}
row 'lock_holders: unknown option with a long name', setup => sub { ($path) },
    call => sub { lock_holders($_[0], 'a_thirty_nine_character_unknown_option_' => 1) }, list => 1,
    want => croaks(qr/^lock_holders: unknown option 'a_thirty_nine_character_unknown_option_'/);
row 'lock_holders: missing PATH', setup => sub { ($missing) }, call => $holders, list => 1, want => fails(ENOENT);
for my $handle (['closed handle', \&closed_handle], ['glob never opened', \&unopened_handle],
                ['tied handle', \&tied_handle], ['in-memory handle', \&memory_handle], ['dirhandle', \&dir_handle]) {
    my ($what, $make) = @$handle;
    row "lock_holders: $what", setup => sub { ($make->()) }, call => $holders, list => 1, want => fails(EBADF);
}
row 'lock_holders: directory PATH', setup => sub { ($dir) }, call => $holders, list => 1, want => $NO_HOLDERS;
row 'lock_holders: pipe', setup => sub { a_pipe() }, call => $holders, list => 1, want => $NO_HOLDERS;
row 'lock_holders: socket', setup => sub { a_socketpair() }, call => $holders, list => 1, want => $NO_HOLDERS;

# -- Guard methods: wrong invocants ---------------------------------------

my @methods = qw(release is_locked mode upgrade downgrade fh path offset length);
my @invocants = (
    ['the class name', sub { $GUARD }],
    [q{the string 'abc'}, sub { 'abc' }],
    ['undef', sub { undef }],
    ['an unblessed hash ref', sub { {} }],
    ['an unblessed array ref', sub { [] }],
    ['a code ref', sub { sub { 1 } }],
    ['a scalar ref', sub { \(my $s = 1) }],
    ["another class's object", sub { bless {}, 'Not::A::Guard' }],
    ['a subclass object that is not a guard', sub { bless {}, 'Guard::Imitation' }],
);
for my $method (@methods) {
    my $code = $GUARD->can($method) or die "no method $method";
    for my $invocant (@invocants) {
        my ($what, $make, $todo) = @$invocant;
        row "$method: invocant is $what",
            setup => sub { ($make->()) }, call => sub { $code->(@_) },
            want => croaks(qr/^\Q$GUARD\E::$method: invocant is not a \Q$GUARD\E object/),
            todo => $todo;
    }
}

# -- Guard methods: bad arguments and released guards ---------------------

for my $kind (qw(file range)) {
    for my $bad ([LOCK_EX => LOCK_EX, qr/LOCK_NB/], ['LOCK_SH|LOCK_NB' => LOCK_SH | LOCK_NB, qr/LOCK_NB/],
                 ['4.5 (LOCK_NB + 0.5)' => LOCK_NB + 0.5, qr/LOCK_NB/],
                 [q{'abc'} => 'abc', qr/LOCK_NB/, [qr/^Argument "abc" isn't numeric\b/]],
                 [undef => undef, qr/LOCK_NB/, [qr/^Use of uninitialized value\b/]]) {
        my ($what, $value, $re, $warns) = @$bad;
        row "upgrade ($kind guard): flag $what",
            setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade($value) },
            want => croaks(qr/^\Q$GUARD\E::upgrade: .*$re/), warns => $warns // [];
    }
    for my $timeout (['-1', -1], ['NaN', $NAN], ['-Inf', -$INF], [q{'abc'}, 'abc'], [q{''}, ''], ['a hash ref', {}]) {
        my ($what, $value) = @$timeout;
        row "upgrade ($kind guard): timeout $what",
            setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(timeout => $value) },
            want => croaks(qr/^\Q$GUARD\E::upgrade: timeout\b/);
    }
    row "upgrade ($kind guard): LOCK_NB with timeout -1",
        setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(LOCK_NB, timeout => -1) },
        want => croaks(qr/^\Q$GUARD\E::upgrade: timeout\b/);
    row "upgrade ($kind guard): LOCK_NB with timeout 'abc'",
        setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(LOCK_NB, timeout => 'abc') },
        want => croaks(qr/^\Q$GUARD\E::upgrade: timeout\b/);
    row "upgrade ($kind guard): timeout 0 then timeout -1",
        setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(timeout => 0, timeout => -1) },
        want => croaks(qr/^\Q$GUARD\E::upgrade: timeout\b/);
    row "upgrade ($kind guard): unknown option",
        setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(bogus => 1) },
        want => croaks(qr/^\Q$GUARD\E::upgrade: unknown option 'bogus'/);
    row "upgrade ($kind guard): unknown option with a long name",
        setup => sub { (guard_on($kind, LOCK_SH)) },
        call => sub { $_[0]->upgrade('a_thirty_nine_character_unknown_option_' => 1) },
        want => croaks(qr/^\Q$GUARD\E::upgrade: unknown option 'a_thirty_nine_character_unknown_option_'/);
    row "upgrade ($kind guard): LOCK_NB and a lone key",
        setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(LOCK_NB, 'timeout') },
        want => croaks(qr/^\Q$GUARD\E::upgrade: /);
    for my $timeout (['+Inf', $INF], ['1e30', 1e30], ['undef', undef]) {
        my ($what, $value) = @$timeout;
        row "upgrade ($kind guard): timeout $what on a free lock",
            setup => sub { (guard_on($kind, LOCK_SH)) }, call => sub { $_[0]->upgrade(timeout => $value) },
            want => $TRUE;
    }

    my $released = sub { (released_guard($kind)) };
    row "release ($kind guard): released twice", setup => $released, call => sub { $_[0]->release }, want => $TRUE;
    row "is_locked ($kind guard): released", setup => $released, call => sub { $_[0]->is_locked }, want => $FALSE;
    row "mode ($kind guard): released", setup => $released, call => sub { $_[0]->mode },
        want => gives('LOCK_SH', sub { $_[0][0] == LOCK_SH });
    row "upgrade ($kind guard): released", setup => $released, call => sub { $_[0]->upgrade },
        want => croaks(qr/^\Q$GUARD\E::upgrade: .*released/);
    row "upgrade ($kind guard): released, LOCK_NB", setup => $released, call => sub { $_[0]->upgrade(LOCK_NB) },
        want => croaks(qr/^\Q$GUARD\E::upgrade: .*released/);
    row "downgrade ($kind guard): released", setup => $released, call => sub { $_[0]->downgrade },
        want => croaks(qr/^\Q$GUARD\E::downgrade: .*released/);
    row "fh ($kind guard on a PATH): released, never asked for fh before", setup => $released,
        call => sub { $_[0]->fh }, want => $UNDEF;
    row "path ($kind guard): released", setup => $released, call => sub { $_[0]->path },
        want => gives('the PATH', sub { defined $_[0][0] && -f $_[0][0] });
}
row 'offset: whole-file guard', setup => sub { (guard_on(file => LOCK_SH)) }, call => sub { $_[0]->offset }, want => $UNDEF;
row 'length: whole-file guard', setup => sub { (guard_on(file => LOCK_SH)) }, call => sub { $_[0]->length }, want => $UNDEF;
row 'path: guard on a handle', setup => sub { handle_guard(open_rw()) }, call => sub { $_[0]->path }, want => $UNDEF;
row 'fh: released guard on a handle', setup => sub { my ($g, $fh) = handle_guard(open_rw()); $g->release; ($g, $fh) },
    call => sub { [$_[0]->fh, $_[1]] },
    want => gives('the handle given', sub { my ($fh, $given) = @{ $_[0][0] }; return defined $fh && $fh == $given });
row 'downgrade: a shared guard stays shared', setup => sub { (guard_on(range => LOCK_SH)) },
    call => sub { $_[0]->downgrade }, want => $TRUE;

# -- croaks are reported at the caller's line ------------------------------

row 'lock_file croak is reported at the caller', setup => sub { ($path, 'abc') }, call => $lockers{lock_file},
    want => croaks(qr/^lock_file: MODE\b/), at_caller => 1;
row 'lock_range croak is reported at the caller', setup => sub { ($path, LOCK_SH, -1, 1) },
    call => sub { lock_range($_[0], $_[1], $_[2], $_[3]) },
    want => croaks(qr/^lock_range: OFFSET\b/), at_caller => 1;
row 'range_conflict croak is reported at the caller', setup => sub { ($path, 0) }, call => $conflict,
    want => croaks(qr/^range_conflict: MODE\b/), at_caller => 1;
row 'lock_holders croak is reported at the caller', setup => sub { (undef) }, call => $holders, list => 1,
    want => croaks(qr/^lock_holders: PATH\b/), at_caller => 1;
for my $method (@methods) {
    my $code = $GUARD->can($method);
    row "$method croak is reported at the caller", setup => sub { ({}) }, call => sub { $code->(@_) },
        want => croaks(qr/^\Q$GUARD\E::$method: invocant\b/), at_caller => 1;
}

# -- a guard survives ordinary assignment ----------------------------------

# The returned reference must behave like any Perl reference wherever it is
# stored; a guard that turns into undef releases its lock at once.
row 'lock_file: result stored in a scalar that held a string',
    setup => sub { (scratch_file(), LOCK_EX) },
    call => sub { my $g = 'no lock yet'; $g = lock_file($_[0], $_[1]); $g },
    want => $A_GUARD;
row 'lock_file: result stored by list assignment is defined',
    setup => sub { (scratch_file(), LOCK_EX) },
    call => sub { my @g = lock_file($_[0], $_[1]); defined $g[0] ? $g[0] : undef },
    want => $A_GUARD;
row 'lock_range: result stored in a scalar that held a number',
    setup => sub { (scratch_file(), LOCK_EX) },
    call => sub { my $g = 1.5; $g = lock_range($_[0], $_[1], 0, 1); $g },
    want => $A_GUARD;
row 'lock_range: result stored in a hash is defined',
    setup => sub { (scratch_file(), LOCK_EX) },
    call => sub { my %h = (guard => lock_range($_[0], $_[1], 0, 1)); defined $h{guard} ? $h{guard} : undef },
    want => $A_GUARD;

# ---- the runner -----------------------------------------------------------

sub errno_name {
    my ($n) = @_;
    return 'none' unless defined $n;
    return '0' unless $n;
    local $! = $n;
    my ($name) = sort grep { $!{$_} } keys %!;
    return $name // $n;
}

sub strip_location { my ($text) = @_; $text =~ s/ at \S+ line \d+\.\n\z//; return $text }

# Runs CALL on ARGS with a time limit; returns what a caller can observe.
sub observe {
    my ($call, $list, @args) = @_;
    my (@warnings, $timed_out, $errno, $got);
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    local $SIG{ALRM} = sub { $timed_out = 1; die "no return within $PATIENCE s\n" };
    $! = 0;
    alarm $PATIENCE;
    # [ ] copies each returned value into a new scalar.
    my $lived = eval { $got = $list ? [$call->(@args)] : [scalar $call->(@args)]; $errno = $! + 0; 1 };
    alarm 0;
    return { lived => $lived, error => $@, got => $got, errno => $errno, warnings => \@warnings, timed_out => $timed_out };
}

sub comparable {
    my ($seen) = @_;
    return {
        died     => $seen->{lived} ? '' : strip_location($seen->{error}),
        returned => $seen->{got} ? [map { $_ // 'undef' } @{ $seen->{got} }] : [],
        errno    => errno_name($seen->{errno}),
        # anonymous globs are numbered in order of creation
        warnings => [map { (my $w = strip_location($_)) =~ s/\bGEN\d+\b/GEN/g; $w } @{ $seen->{warnings} }],
    };
}

sub run_row {
    my ($row) = @_;
    my $want = $row->{want};
    my @args = $row->{setup} ? $row->{setup}->() : ();
    my $fds  = fd_count();
    my $seen = observe($row->{call}, $row->{list}, @args);
    my $got  = delete $seen->{got};

    ok !$seen->{timed_out}, 'returned promptly';
    if (my $re = $want->{croak}) {
        ok !$seen->{lived}, 'croaked';
        like $seen->{error}, $re, 'croak message';
        like $seen->{error}, qr/ at \Q$HERE\E line \d+\.\n\z/, "croak reported at the caller's line"
          if $row->{at_caller};
    }
    else {
        ok $seen->{lived}, 'did not die' or diag "died: $seen->{error}";
        if (defined(my $errno = $want->{fail})) {
            my $false = $got && ($row->{list} ? !@$got : @$got == 1 && !$got->[0]);
            ok $false, $row->{list} ? 'empty list' : 'false';
            is errno_name($seen->{errno}), errno_name($errno), '$!';
        }
        else {
            my ($what, $check) = @{ $want->{ok} };
            ok $got && $check->($got, $seen->{errno}), "gives $what";
        }
    }
    my @warns = @{ $row->{warns} };
    is scalar @{ $seen->{warnings} }, scalar @warns, 'number of warnings'
      or diag "warnings: @{ $seen->{warnings} }";
    for my $i (0 .. $#warns) {
        like $seen->{warnings}[$i] // '', $warns[$i], "warning $i";
    }
    undef $got;    # lets a returned guard go
    is fd_count(), $fds, 'no descriptor leaked';

    if (my $core = $row->{core}) {
        my $ours   = comparable(observe($row->{call}, 0, $row->{setup}->()));
        my $theirs = comparable(observe($core, 0, $row->{setup}->()));
        is_deeply $ours, $theirs, 'same as CORE::flock';
    }
}

my %seen_name;
for my $row (@rows) {
    die "duplicate row name: $row->{name}" if $seen_name{ $row->{name} }++;
    local $TODO = $row->{todo};
    subtest $row->{name} => sub { run_row($row) };
}

done_testing;
