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
our @EXPORT_OK   = (@{ $EXPORT_TAGS{flock} }, qw(flock lock_file));
$EXPORT_TAGS{all} = [@EXPORT_OK];

require XSLoader;
XSLoader::load('File::Locker', $VERSION);

package File::Locker::Guard;

# A new ithread gets no copy of a guard: the lock stays with the thread that
# took it, and the new thread's DESTROY can never release it.
sub CLONE_SKIP { 1 }

# The locked handle, for I/O under the lock. A guard on a PATH makes one on
# first use: a duplicate of the locked descriptor, so it shares the lock.
sub fh {
    my ($self) = @_;
    my $fh = $self->_handle;
    return $fh if $fh;
    my ($fd, $writable) = $self->_descriptor or return;
    open($fh, $writable ? '+<&' : '<&', $fd) or return;
    $self->_set_handle($fh);
    return $fh;
}

1;
__END__

=head1 NAME

File::Locker - file locks for Perl that time out without polling and stay correct across fork

=head1 SYNOPSIS

    use File::Locker qw(:flock flock);

    open my $fh, '>>', '/var/lock/nightly.lock' or die "open: $!";

    # Exactly CORE::flock, plus an optional timeout in seconds.
    flock($fh, LOCK_EX)      or die "flock: $!";
    flock($fh, LOCK_UN);

    if (flock($fh, LOCK_EX, 2.5)) {
        # ... critical section ...
        flock($fh, LOCK_UN);
    }
    elsif ($!{ETIMEDOUT}) {
        warn "still busy after 2.5 seconds\n";
    }

=head1 DESCRIPTION

File::Locker gives Perl programs inter-process synchronisation with file
locks. It stands beside L<Fcntl>'s C<:flock> constants and C<CORE::flock>:
the same constants (the very same subroutines, so importing both is
harmless), and a C<flock> that keeps core's contract while adding a timeout
that blocks in the kernel instead of polling.

The lock engine is a small C++ library with no knowledge of Perl, reached
through thin XS glue. It needs nothing outside core Perl at run time.

=head1 FUNCTIONS

Nothing is exported by default. Export tags: C<:flock> (LOCK_SH LOCK_EX
LOCK_UN LOCK_NB) and C<:all> (everything below).

=head2 flock(FH, OPERATION [, TIMEOUT])

A drop-in for C<CORE::flock>. Without TIMEOUT it behaves as core does:

=over 4

=item *

It uses flock(2), so it excludes and is excluded by C<CORE::flock>,
util-linux C<flock(1)>, Python's C<fcntl.flock> and any other flock(2) user.

=item *

It returns 1 on success and 0 on failure with C<$!> set: C<EWOULDBLOCK> when
C<LOCK_NB> meets a conflict, C<EBADF> for a closed or unopened handle (with
core's warning text, "flock() on closed filehandle FH", in the same warning
categories), C<EINVAL> for an operation that is not exactly one of LOCK_SH,
LOCK_EX, LOCK_UN, optionally or-ed with LOCK_NB.

=item *

It flushes FH's output buffer before locking and before unlocking, so the
next holder sees what was printed under the lock.

=item *

A signal that interrupts the wait runs its Perl handler (which may die, as
in the C<alarm> idiom from L<perlipc>); if the handler returns, C<flock>
returns 0 with C<$!> set to C<EINTR>.

=item *

An undefined FH croaks "Can't use an undefined value as a symbol
reference" and a reference to anything but a glob or IO object croaks "Not a
GLOB reference", as core does.

=back

FH may be a bareword (C<flock(FH, LOCK_EX)>, resolved in the caller's
package), a glob, a glob reference, an IO object such as an L<IO::File>, a
string naming a handle, or -- an addition -- a file descriptor number.
A handle with no descriptor (an in-memory or tied handle) gives 0 with
C<EBADF>.

The prototype is C<(*$;$)>. Importing C<flock> replaces the builtin in the
importing package only; to replace it everywhere, install it before the code
that calls it is compiled:

    BEGIN { *CORE::GLOBAL::flock = \&File::Locker::flock }

B<TIMEOUT> (seconds, fractions allowed) bounds a blocking wait:

=over 4

=item *

When the lock is free it is taken at once, at the cost of a plain
C<flock>. When it is busy, the process blocks in flock(2) and a timer aimed
at the waiting thread interrupts it at the deadline: there is no polling, and
when the holder releases, the waiter wakes as fast as a plain blocking
C<flock> would.

=item *

When the deadline passes, C<flock> returns 0 with C<$!> set to C<ETIMEDOUT>,
never earlier than TIMEOUT.

=item *

TIMEOUT 0 is one non-blocking try, exactly like adding C<LOCK_NB>: busy
gives C<EWOULDBLOCK>.

=item *

An undefined TIMEOUT waits without bound; C<+Inf> and values beyond about
thirty years do too. A negative, NaN or non-numeric TIMEOUT returns 0 with
C<$!> set to C<EINVAL>.

=item *

Perl signal handlers still run during the wait. A handler that dies aborts
the wait, with nothing locked; a handler that returns lets the wait go on
with the time that is left.

=item *

The caller's C<alarm>, C<$SIG{ALRM}>, signal mask and every signal
disposition are left as they were. The timer uses the real-time signal
C<SIGRTMIN+5>: during a timed wait that is blocked on a busy lock, and only
then, that signal has a no-op handler and is unblocked in the waiting
thread. A program that itself uses C<SIGRTMIN+5> should not rely on
receiving it during such a wait.

=back

=head1 ERRORS

Lock outcomes -- busy, timed out, interrupted, bad handle -- are reported the
way C<CORE::flock> reports them: a false return with C<$!> set, never an
exception. C<flock> croaks only where core croaks.

=head1 FORK AND THREADS

A lock taken with C<flock> belongs to the open file description, exactly as
with C<CORE::flock>: after C<fork>, parent and child share it through the
inherited descriptor, C<LOCK_UN> in either releases it for both, and it
lasts until the last descriptor sharing it is closed. A handle opened anew in
the child is a separate description and conflicts with the parent's lock.

Timed waits may run in several threads at once; each thread's timer is aimed
at that thread alone.

=head1 SEE ALSO

L<Fcntl> and C<perldoc -f flock>, whose contract C<flock> keeps.

L<File::FcntlLock> -- fcntl(2) record locks with a full C<struct flock>
interface; no timeouts.

L<File::Flock> and L<File::Flock::Retry> -- lock files by path; their
timeouts, where they have them, retry with C<LOCK_NB> and sleep in between.

L<LockFile::Simple> -- lock files created beside the target, with polling
and stale-lock heuristics rather than kernel locks.

L<IO::LockedFile> -- an L<IO::File> that locks on open.

=head1 LICENSE

Copyright the File::Locker developers.

This library is free software; you can redistribute it and/or modify it under
the same terms as Perl itself.

=cut
