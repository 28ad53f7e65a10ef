use strict;
use warnings;

# Loading, exports, prototype, and how File::Locker::flock takes the place
# of the builtin: per importing package, or globally via CORE::GLOBAL.

use Test::More;
use B ();
use Fcntl ();
use POSIX qw(EBADF);
use lib 't/lib';
use LockerTest qw(spawn probe scratch_file);

BEGIN { use_ok('File::Locker') or BAIL_OUT('File::Locker does not load') }

my @CONSTANTS = qw(LOCK_SH LOCK_EX LOCK_UN LOCK_NB);

# Compiles and runs CODE in package PKG; returns the error ('' if none) and
# the warnings it raised.
sub compile_in {
    my ($pkg, $code) = @_;
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    my $ok = eval "package $pkg; $code; 1";
    return ($ok ? '' : $@, \@warnings);
}

sub has_sub { my ($pkg, $name) = @_; no strict 'refs'; return defined &{"${pkg}::$name"} }

# Names of all ops in an op tree, depth first.
sub op_names {
    my ($op) = @_;
    my @names;
    for (; $op && $$op; $op = $op->sibling) {
        push @names, $op->name;
        push @names, op_names($op->first) if $op->flags & B::OPf_KIDS;
    }
    return @names;
}

subtest 'nothing is exported by default' => sub {
    my ($err, $warnings) = compile_in('Fresh::Default', 'use File::Locker');
    is $err, '', 'plain use compiles';
    is_deeply $warnings, [], 'without warnings';
    ok !has_sub('Fresh::Default', 'flock'), 'flock not imported';
    ok !has_sub('Fresh::Default', $_), "$_ not imported" for @CONSTANTS;
};

subtest ':flock exports the constants, identical to Fcntl' => sub {
    my ($err, $warnings) = compile_in('Fresh::FlockTag', 'use File::Locker qw(:flock)');
    is $err, '', 'use with :flock compiles';
    is_deeply $warnings, [], 'without warnings';
    for my $name (@CONSTANTS) {
        ok has_sub('Fresh::FlockTag', $name), "$name imported" or next;
        my $ours = Fresh::FlockTag->can($name)->();
        my $fcntl = Fcntl->can($name)->();
        cmp_ok $ours, '==', $fcntl, "$name == Fcntl's $name ($fcntl)";
    }
    ok !has_sub('Fresh::FlockTag', 'flock'), ':flock does not import flock itself';
};

subtest ':all has flock and the constants' => sub {
    my ($err, $warnings) = compile_in('Fresh::AllTag', 'use File::Locker qw(:all)');
    is $err, '', 'use with :all compiles';
    is_deeply $warnings, [], 'without warnings';
    ok has_sub('Fresh::AllTag', 'flock'), 'flock imported';
    is \&Fresh::AllTag::flock, \&File::Locker::flock, '... and it is File::Locker::flock';
    ok has_sub('Fresh::AllTag', $_), "$_ imported" for @CONSTANTS;
};

subtest 'Fcntl and File::Locker side by side, no warnings' => sub {
    my %orders = (
        'Fcntl first'        => 'use Fcntl qw(:flock); use File::Locker qw(:flock flock);',
        'File::Locker first' => 'use File::Locker qw(:flock flock); use Fcntl qw(:flock);',
    );
    my $n = 0;
    for my $order (sort keys %orders) {
        my $pkg = 'Fresh::Mixed' . ++$n;

        # Lexical warnings in the importing code, $^W for the exporters.
        my ($err, $warnings) = do {
            local $^W = 1;
            compile_in($pkg, "use warnings; $orders{$order}");
        };
        is $err, '', "$order: compiles";
        is_deeply $warnings, [], "$order: no warning under use warnings and \$^W";
        is \&{"${pkg}::flock"}, \&File::Locker::flock, "$order: flock is ours";
        for my $name (@CONSTANTS) {
            my $got = $pkg->can($name);
            ok $got && $got->() == Fcntl->can($name)->(), "$order: $name keeps Fcntl's value";
        }

        # A fresh perl under -w, loading the module for the first time.
        my $code = 'BEGIN { $SIG{__WARN__} = sub { print "warning: $_[0]" } }'
          . " package Mixed; $orders{$order} print qq{loaded\\n};";
        open my $out, '-|', $^X, '-Mblib', '-w', '-e', $code or die "run $^X: $!";
        my $output = do { local $/; <$out> };
        close $out;
        is $?, 0, "$order: perl -w exits 0";
        is $output, "loaded\n", "$order: no warning under perl -w";
    }
};

subtest 'prototype' => sub {
    is prototype('File::Locker::flock'), '*$;$', 'by name';
    is prototype(\&File::Locker::flock), '*$;$', 'by reference';
};

subtest 'importing replaces flock in the importing package only' => sub {
    my $path = scratch_file();
    open my $fh, '<', $path or die "open $path: $!";
    my $fd = fileno $fh;

    # A literal descriptor number: core takes it for a handle name, ours for
    # the descriptor.
    my ($err) = compile_in('Imports::Ours', "use File::Locker qw(:flock flock); sub take { flock($fd, LOCK_EX) }");
    is $err, '', 'importing package compiles';
    ($err) = compile_in('Imports::Nothing', "use Fcntl qw(:flock); sub take { flock($fd, LOCK_EX) }");
    is $err, '', 'other package compiles';
    ok !has_sub('Imports::Nothing', 'flock'), 'other package has no flock sub';

    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };

    my $got = Imports::Ours::take();
    is $got, 1, "importing package: flock($fd, LOCK_EX) succeeds";
    is_deeply \@warnings, [], '... without a warning';
    is probe($path, Fcntl::LOCK_SH), 0, '... and the file is locked';
    ok File::Locker::flock($fh, Fcntl::LOCK_UN), 'unlocked';

    @warnings = ();
    $! = 0;
    $got = Imports::Nothing::take();
    my $errno = $! + 0;
    is $got, 0, "other package: flock($fd, LOCK_EX) fails as CORE::flock";
    is $errno, EBADF, '... with EBADF';
    is scalar(@warnings), 1, '... and one warning';
    like $warnings[0] // '', qr/^flock\(\) on unopened filehandle \Q$fd\E at /, '... about an unopened handle';
    is probe($path, Fcntl::LOCK_SH), 1, '... and the file is not locked';
};

subtest 'CORE::GLOBAL::flock makes bareword calls use ours' => sub {
    my $path = scratch_file();
    my $child = spawn(sub {
        my ($parent) = @_;

        # The override must be in place before the call is compiled.
        my $take = eval q{
            BEGIN { *CORE::GLOBAL::flock = \&File::Locker::flock }
            package Global::User;
            use Fcntl qw(:flock);
            sub { open FH, '<', $_[0] or die "open $_[0]: $!"; flock(FH, LOCK_EX) }
        } or die $@;
        my @ops = grep { $_ eq 'flock' || $_ eq 'entersub' } op_names(B::svref_2object($take)->ROOT);
        $parent->say("ops @ops");
        $parent->say('result ' . $take->($path));
        $parent->expect('done');
    });
    is $child->hear, 'ops entersub', 'the call compiles to a sub call, not the flock op';
    is $child->hear, 'result 1', 'flock(FH, LOCK_EX) succeeds';
    is probe($path, Fcntl::LOCK_SH), 0, '... and holds the lock on the package handle';
    $child->say('done');
    is $child->wait, 0, 'child exits cleanly';
    is probe($path, Fcntl::LOCK_SH), 1, 'lock gone with the child';
};

done_testing;
