use strict;
use warnings;

# File::Locker::flock against the CORE::flock contract: first side by side
# with core wherever both accept the call, then what only ours accepts
# (descriptor numbers, handle names resolved at run time, TIMEOUT).

use Test::More;
use Fcntl qw(:flock);
use IO::File;
use POSIX qw(EBADF EINVAL EWOULDBLOCK EINTR);
use Time::HiRes ();
use lib 't/lib';
use LockerTest qw(holder probe scratch_file scratch_dir release_and_wait);
use File::Locker ();

my $path = scratch_file();

sub strip_location { my ($text) = @_; $text =~ s/ at .+? line \d+\.\n\z//s; return $text }

# Compiles CODE with FLOCK replaced by FUNCTION, calls it with ARGS, and
# returns what a caller can observe.
sub observe {
    my ($function, $code, @args) = @_;
    (my $source = $code) =~ s/\bFLOCK\b/$function/g;
    my $sub = eval "sub { $source }" or die "compile '$source': $@";
    my (@warnings, $errno);
    local $SIG{__WARN__} = sub { push @warnings, strip_location($_[0]) };
    $! = 0;
    my $ret = eval { my $r = $sub->(@args); $errno = $! + 0; $r };
    return {
        ret      => defined $ret ? "$ret" : 'undef',
        errno    => $errno // 'none',
        warnings => \@warnings,
        died     => strip_location($@),
    };
}

sub open_read { open my $fh, '<', $path or die "open $path: $!"; return $fh }

# Runs CODE with a safety net, so a call that should not block fails the
# test instead of hanging it.
sub bounded {
    my ($code) = @_;
    local $SIG{ALRM} = sub { die "blocked for $LockerTest::PATIENCE s\n" };
    alarm $LockerTest::PATIENCE;
    my @got = eval { $code->() };
    alarm 0;
    die $@ if $@;
    return @got;
}

# Each case: name, setup (returns the arguments, shared by both calls),
# code (FLOCK stands for the function), the expected observation (or a sub
# making it from the arguments), and a TODO reason where ours falls short.
my %ok   = (ret => '1', errno => 0, warnings => [], died => '');
my %fail = (ret => '0', warnings => [], died => '');
my @cases = (
    ['open read handle, LOCK_SH', \&open_read, 'FLOCK($_[0], LOCK_SH)', {%ok}],
    ['read-only handle, LOCK_EX', \&open_read, 'FLOCK($_[0], LOCK_EX)', {%ok}],
    ['LOCK_SH|LOCK_NB',           \&open_read, 'FLOCK($_[0], LOCK_SH|LOCK_NB)', {%ok}],
    ['LOCK_UN',                   \&open_read, 'FLOCK($_[0], LOCK_UN)', {%ok}],

    ['closed lexical handle',
        sub { my $fh = open_read(); close $fh; $fh }, 'FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF, warnings => ['flock() on closed filehandle $fh']}],
    ['closed bareword handle',
        sub { open CLOSED, '<', $path or die; close CLOSED; () }, 'FLOCK(CLOSED, LOCK_EX)',
        {%fail, errno => EBADF, warnings => ['flock() on closed filehandle CLOSED']}],
    ['unopened handle by name',
        undef, 'FLOCK("NEVER_OPENED", LOCK_EX)',
        {%fail, errno => EBADF, warnings => ['flock() on unopened filehandle NEVER_OPENED']}],
    ['unopened bareword handle',
        undef, 'FLOCK(NEVER_OPENED, LOCK_EX)',
        {%fail, errno => EBADF, warnings => ['flock() on unopened filehandle NEVER_OPENED']}],
    ['closed IO::File object',
        sub { my $io = IO::File->new($path, '<') or die; $io->close; $io }, 'FLOCK($_[0], LOCK_EX)',
        sub { +{%fail, errno => EBADF, warnings => ['flock() on closed filehandle ' . *{ $_[0] }{NAME}]} }],
    ['closed *FH{IO}',
        sub { open CLOSED_IO, '<', $path or die; close CLOSED_IO; *CLOSED_IO{IO} }, 'FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF, warnings => ['flock() on closed filehandle __ANONIO__']}],

    ['closed handle under no warnings',
        sub { my $fh = open_read(); close $fh; $fh }, 'no warnings; FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF}],
    ['unopened handle under no warnings',
        undef, 'no warnings; FLOCK(NEVER_OPENED, LOCK_EX)',
        {%fail, errno => EBADF}],
    ['closed handle under no warnings "closed"',
        sub { my $fh = open_read(); close $fh; $fh }, 'no warnings "closed"; FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF}],
    ['closed handle under no warnings "unopened"',
        sub { my $fh = open_read(); close $fh; $fh }, 'no warnings "unopened"; FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF, warnings => ['flock() on closed filehandle $fh']}],

    ['dirhandle',
        sub { opendir my $dh, scratch_dir() or die; $dh }, 'FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF, warnings => [
            'flock() on unopened filehandle $dh',
            "\t(Are you trying to call flock() on dirhandle \$dh?)\n",
        ]}],

    (map { my $op = $_; ["bad operation $op", \&open_read, "FLOCK(\$_[0], $op)", {%fail, errno => EINVAL}] }
        '0', 'LOCK_NB', 'LOCK_SH|LOCK_EX', '64'),

    ['in-memory handle',
        sub { my $buf = 'data'; open my $mem, '<', \$buf or die; $mem }, 'FLOCK($_[0], LOCK_EX)',
        {%fail, errno => EBADF}],

    ['undef handle', sub { (undef) }, 'FLOCK($_[0], LOCK_EX)',
        {ret => 'undef', died => "Can't use an undefined value as a symbol reference"}],
    ['hash reference', sub { ({}) }, 'FLOCK($_[0], LOCK_EX)',
        {ret => 'undef', died => 'Not a GLOB reference'}],
);

subtest 'side by side with CORE::flock' => sub {
    for my $case (@cases) {
        my ($name, $setup, $code, $want, $todo) = @$case;
        my @args = $setup ? $setup->() : ();
        my $core = observe('CORE::flock', $code, @args);
        my $ours = observe('File::Locker::flock', $code, @args);
        $want = $want->(@args) if ref $want eq 'CODE';
        local $TODO = $todo;
        is_deeply $ours, $core, "$name: same as CORE::flock";
        is_deeply { map { $_ => $ours->{$_} } keys %$want }, $want, "$name: expected outcome";
    }
};

subtest 'a read-only handle really takes LOCK_EX' => sub {
    my $fh = open_read();
    is File::Locker::flock($fh, LOCK_EX), 1, 'LOCK_EX on a read-only handle';
    is probe($path, LOCK_SH), 0, 'another process cannot share it';
    is File::Locker::flock($fh, LOCK_UN), 1, 'LOCK_UN';
    is probe($path, LOCK_SH), 1, 'file is free again';
};

subtest 'handle forms' => sub {
    my @forms = (
        ['a glob',              sub { open FORM, '<', $path or die; (*FORM) }],
        ['a glob reference',    sub { open FORM, '<', $path or die; (\*FORM) }],
        ['an IO reference',     sub { open FORM, '<', $path or die; (*FORM{IO}) }],
        ['an IO::File object',  sub { (IO::File->new($path, '<') || die) }],
        ['a descriptor number', sub { my $fh = open_read(); (fileno($fh), $fh) }],
        ['a descriptor string', sub { my $fh = open_read(); ('' . fileno($fh), $fh) }],
    );
    for my $form (@forms) {
        my ($name, $make) = @$form;
        my ($arg, @keep_open) = $make->();
        my @warnings;
        local $SIG{__WARN__} = sub { push @warnings, $_[0] };
        is File::Locker::flock($arg, LOCK_EX), 1, "$name: LOCK_EX";
        is probe($path, LOCK_SH), 0, "$name: file is locked";
        is File::Locker::flock($arg, LOCK_UN), 1, "$name: LOCK_UN";
        is probe($path, LOCK_SH), 1, "$name: file is free again";
        is_deeply \@warnings, [], "$name: no warnings";
        close FORM;
    }
};

# Handles of the same name in two packages, on two files.
my $main_path = scratch_file();
my $foo_path  = scratch_file();
open FH, '<', $main_path or die "open $main_path: $!";

package Foo {
    open FH, '<', $foo_path or die "open $foo_path: $!";
    sub by_string   { File::Locker::flock('FH', $_[0]) }
    sub by_variable { my $name = 'FH'; File::Locker::flock($name, $_[0]) }
    sub by_bareword { File::Locker::flock(FH, $_[0]) }
}

subtest 'a handle name resolves in the caller\'s package' => sub {
    my %calls = (
        'name string from Foo'    => \&Foo::by_string,
        'name in a variable'      => \&Foo::by_variable,
        'bareword from Foo'       => \&Foo::by_bareword,
        'qualified name from main' => sub { File::Locker::flock('Foo::FH', $_[0]) },
    );
    for my $name (sort keys %calls) {
        is $calls{$name}->(LOCK_EX), 1, "$name: LOCK_EX";
        is probe($foo_path, LOCK_SH), 0, "$name: Foo::FH's file is locked";
        is probe($main_path, LOCK_SH), 1, "$name: main::FH's file is not";
        is $calls{$name}->(LOCK_UN), 1, "$name: LOCK_UN";
        is probe($foo_path, LOCK_SH), 1, "$name: Foo::FH's file is free again";
    }
    close Foo::FH;
    close FH;
};

subtest 'invalid TIMEOUT' => sub {
    my $fh = open_read();
    my @timeouts = (['-1', -1], ['"nan"', 'nan'], ['Inf/Inf', 9**9**9 / 9**9**9], ['"abc"', 'abc']);
    for my $timeout (@timeouts) {
        my ($name, $value) = @$timeout;
        $! = 0;
        my $got = File::Locker::flock($fh, LOCK_EX, $value);
        my $errno = $! + 0;
        is $got, 0, "TIMEOUT $name: false";
        is $errno, EINVAL, "TIMEOUT $name: EINVAL";
    }
    is probe($path, LOCK_SH), 1, 'no lock was taken';
};

subtest 'TIMEOUT undef and 0 on a free lock' => sub {
    my $fh = open_read();
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    for my $timeout (undef, 0) {
        my $name = $timeout // 'undef';
        is bounded(sub { File::Locker::flock($fh, LOCK_EX, $timeout) }), 1, "TIMEOUT $name: LOCK_EX";
        is probe($path, LOCK_SH), 0, "TIMEOUT $name: file is locked";
        is File::Locker::flock($fh, LOCK_UN, $timeout), 1, "TIMEOUT $name: LOCK_UN";
        is probe($path, LOCK_SH), 1, "TIMEOUT $name: file is free again";
    }
    is_deeply \@warnings, [], 'no warnings';
};

# Blocks in CODE with SIGALRM arriving every 0.1 s; reports the outcome. A
# wait that resumes after the handler is cut short by a die, not left to hang.
sub interrupted_wait {
    my ($code) = @_;
    my $ticks = 0;
    local $SIG{ALRM} = sub { die "still waiting after $ticks signals\n" if ++$ticks >= 50 };
    my $errno;
    Time::HiRes::setitimer(Time::HiRes::ITIMER_REAL(), 0.1, 0.1);
    my $got = eval { my $r = $code->(); $errno = $! + 0; $r };
    Time::HiRes::setitimer(Time::HiRes::ITIMER_REAL(), 0);
    return { ret => $got // "died: $@", errno => $errno // 'none', handler_ran => $ticks > 0 ? 1 : 0 };
}

subtest 'TIMEOUT on a lock held by another process' => sub {
    my $fh = open_read();
    my $holder = holder($path, LOCK_EX);

    $! = 0;
    my ($got) = bounded(sub { File::Locker::flock($fh, LOCK_SH, 0) });
    my $errno = $! + 0;
    is $got, 0, 'TIMEOUT 0: false';
    is $errno, EWOULDBLOCK, 'TIMEOUT 0: EWOULDBLOCK';

    $! = 0;
    ($got) = bounded(sub { File::Locker::flock($fh, LOCK_SH | LOCK_NB, undef) });
    $errno = $! + 0;
    is $got, 0, 'LOCK_NB with TIMEOUT undef: false';
    is $errno, EWOULDBLOCK, 'LOCK_NB with TIMEOUT undef: EWOULDBLOCK';

    # Without a bound, a signal ends the wait as in core.
    my $core = interrupted_wait(sub { CORE::flock($fh, LOCK_SH) });
    is_deeply $core, {ret => 0, errno => EINTR, handler_ran => 1}, 'CORE::flock: interrupted wait';
    is_deeply interrupted_wait(sub { File::Locker::flock($fh, LOCK_SH) }), $core,
      'no TIMEOUT: same as CORE::flock';
    is_deeply interrupted_wait(sub { File::Locker::flock($fh, LOCK_SH, undef) }), $core,
      'TIMEOUT undef: same as CORE::flock';

    release_and_wait($holder);
    is bounded(sub { File::Locker::flock($fh, LOCK_SH, 0) }), 1, 'TIMEOUT 0 once released: true';
};

done_testing;
