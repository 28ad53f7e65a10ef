package File::Locker;

use 5.016;
use strict;
# No "use warnings" here: loading warnings.pm is nearly half of this
# module's load time, which bin/locker pays on every run. The Perl code
# below is small, and the test suite runs it under -w.

our $VERSION = '0.02';

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
our @EXPORT_OK   = (@{ $EXPORT_TAGS{flock} }, qw(flock lock_file lock_range range_conflict lock_holders
    lock_file_async lock_range_async));
$EXPORT_TAGS{all} = [@EXPORT_OK];

require XSLoader;
XSLoader::load('File::Locker', $VERSION);

# Guards and waiters own what they stand for, so they refuse to be copied:
# Storable asks these hooks before it copies anything (freeze, nfreeze,
# dclone).
sub _refuse_copies {
    my ($class, $why) = @_;
    my $refuse = sub {
        require Carp;
        Carp::croak("$class objects cannot be frozen or cloned: $why");
    };
    no strict 'refs';
    *{"${class}::STORABLE_freeze"} = *{"${class}::STORABLE_attach"} = $refuse;
    return;
}

package File::Locker::Guard;

# A new ithread gets no copy of a guard: the lock stays with the thread that
# took it, and nothing in the new thread can ever release it.
sub CLONE_SKIP { 1 }

File::Locker::_refuse_copies(__PACKAGE__, 'a lock belongs to the guard that took it');

package File::Locker::Waiter;

# As for guards: a new ithread gets no copy, and no copy can be made.
sub CLONE_SKIP { 1 }

File::Locker::_refuse_copies(__PACKAGE__, 'a wait belongs to the process and thread that started it');

1;
__END__

=head1 NAME

File::Locker - file locks for Perl that time out without polling and stay correct across fork

=head1 SYNOPSIS

    use File::Locker qw(:flock flock lock_file lock_range range_conflict);
    use File::Temp qw(tempdir);

    my $dir = tempdir(CLEANUP => 1);    # where your lock files live
    open my $fh, '>>', "$dir/nightly.lock" or die "open: $!";

    # Exactly CORE::flock, plus an optional timeout in seconds.
    flock($fh, LOCK_EX)      or die "flock: $!";
    flock($fh, LOCK_UN);

    if (flock($fh, LOCK_EX, 2.5)) {
        print "in the critical section\n";
        flock($fh, LOCK_UN);
    }
    elsif ($!{ETIMEDOUT}) {
        warn "still busy after 2.5 seconds\n";
    }

    # Scoped guards: released at scope exit, never by a forked child.
    {
        my $guard = lock_file("$dir/build.lock", LOCK_EX, timeout => 30)
            or die "build lock: $!";
        print "building\n";
    }

    # Byte ranges on open-file-description locks, composing per handle.
    open my $db, '+>', "$dir/records.dat" or die "open: $!";
    my $record = lock_range($db, LOCK_EX, 512 * 7, 512) or die "record 7: $!";
    my $busy   = range_conflict("$dir/records.dat", LOCK_SH, 0, 0);  # true now

Waiting inside an event loop: the waiter's handle becomes readable when
the wait ends, and the loop keeps serving everything else meanwhile. With
AnyEvent:

    use AnyEvent;
    use File::Locker qw(:flock lock_file_async);
    use File::Temp qw(tempdir);

    my $dir  = tempdir(CLEANUP => 1);
    my $done = AnyEvent->condvar;
    my $w    = lock_file_async("$dir/report.lock", LOCK_EX, timeout => 30);
    my $io; $io = AnyEvent->io(fh => $w->fh, poll => 'r', cb => sub {
        undef $io;
        my $guard = $w->guard or die "no lock: $!\n";
        print "reporting under the lock\n";    # released when $guard goes
        $done->send;
    });
    $done->recv;

With IO::Async:

    use IO::Async::Loop;
    use File::Locker qw(:flock lock_range_async);
    use File::Temp qw(tempdir);

    my $dir  = tempdir(CLEANUP => 1);
    open my $db, '+>', "$dir/records.dat" or die "open: $!";
    my $loop = IO::Async::Loop->new;
    my $wait = lock_range_async($db, LOCK_EX, 512 * 7, 512);
    $loop->watch_io(handle => $wait->fh, on_read_ready => sub {
        $loop->unwatch_io(handle => $wait->fh, on_read_ready => 1);
        my $guard = $wait->guard or die "record 7: $!\n";
        print "record 7 is ours\n";
        $loop->stop;
    });
    $loop->run;

With Mojo::IOLoop:

    use Mojo::IOLoop;
    use File::Locker qw(:flock lock_file_async);
    use File::Temp qw(tempdir);

    my $dir = tempdir(CLEANUP => 1);
    my $mw  = lock_file_async("$dir/deploy.lock", LOCK_EX);
    Mojo::IOLoop->singleton->reactor->io($mw->fh => sub {
        my ($reactor) = @_;
        $reactor->remove($mw->fh);
        my $guard = $mw->guard or die "no lock: $!\n";
        print "deploying under the lock\n";
        Mojo::IOLoop->stop;
    })->watch($mw->fh, 1, 0);
    Mojo::IOLoop->start;

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
LOCK_EX, LOCK_UN, optionally or-ed with LOCK_NB. (Core truncates the
operation to an integer and passes any other bits to the kernel, so C<2.5>
and C<2**32 + LOCK_EX> lock exclusively there, and current Linux silently
ignores the obsolete C<LOCK_MAND> flag; this C<flock> refuses all of those
with C<EINVAL>. C<'2'> and C<2.0> are exactly LOCK_EX.)

=item *

An operation that is not a number, or undefined, warns as core does, word
for word: C<Argument "abc" isn't numeric in flock>, C<Use of uninitialized
value $op in flock> (naming the variable where core does).

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
package), a glob, a glob reference, an IO object such as an L<IO::File>, an
object that overloads C<*{}>, a tied scalar holding any of these, a string
naming a handle, or -- an addition -- a file descriptor number.
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

If the timer cannot be armed -- C<timer_create> fails when the user has no
queued signals left (C<RLIMIT_SIGPENDING>, e.g. under C<ulimit -i 0>) -- a
wait on a busy lock is not attempted: C<flock> returns 0 at once with C<$!>
set to C<ENOLCK>. That errno means "no resources to wait"; it is never
C<EWOULDBLOCK> (the lock was not found busy by a wait) nor C<ETIMEDOUT> (no
deadline passed). A free lock is still taken, a TIMEOUT of 0 is still one
try, and a wait without TIMEOUT needs no timer and is unaffected. The same
holds for the C<timeout> of C<lock_file>, C<lock_range> and C<upgrade>.
A thread makes its timer at its first timed wait that has to block and
keeps it, disarmed between waits, until the thread ends (re-arming is
cheaper than making a new one): from then on it holds one of the user's
queued-signal slots, and its later waits can always be armed. A forked
child makes its own.

=item *

The caller's C<alarm>, C<$SIG{ALRM}>, signal mask and every signal
disposition are left as they were. The timer uses the real-time signal
C<SIGRTMIN+5>: during a timed wait that is blocked on a busy lock, and only
then, that signal has a no-op handler and is unblocked in the waiting
thread. A program that itself uses C<SIGRTMIN+5> should not rely on
receiving it during such a wait.

=back

=head2 lock_file(PATH | FH, MODE, %options)

    my $guard = lock_file('/var/lock/build.lock', LOCK_EX, timeout => 30)
        or die "no lock: $!";
    # ... the lock is held until $guard goes out of scope or is released

Takes a whole-file lock with flock(2) semantics and returns a
L</GUARDS> object, or undef with C<$!> set: C<EWOULDBLOCK> (busy, with
C<LOCK_NB> or C<< timeout => 0 >>), C<ETIMEDOUT>, C<ENOLCK> (a timed wait
whose timer cannot be armed, see L</flock(FH, OPERATION [, TIMEOUT])>),
C<ENXIO> (a FIFO or a socket at PATH, see below), or the error of opening
PATH. PATH may be an object that overloads C<""> (a path object), as
C<open> takes it; FH is a glob, a glob reference or an IO object.

MODE is C<LOCK_SH> or C<LOCK_EX>, optionally or-ed with C<LOCK_NB>, and
exactly that integer: anything else (C<2.5> included) croaks.

The first argument is a PATH when it is a plain string -- always, even one
that looks like a number -- and a handle when it is a glob, a glob
reference or an IO object (the guard keeps a reference to the handle; its
buffer is flushed before locking and before unlocking).

Options:

=over 4

=item timeout => SECONDS

Bounds the whole call, as for C<flock>: a non-negative number, fractions
allowed; 0 is the same as C<LOCK_NB>; undef or absent waits without bound.
Anything else croaks. The timeout covers opening PATH too: opening never
blocks, whatever PATH names (see below), and the call never answers
C<EWOULDBLOCK> or C<ETIMEDOUT> before its deadline.

=item coherent => BOOL

Default false. Makes the data of the locked file agree between machines
whose filesystem client keeps its page cache across locks (FUSE clients such
as GlusterFS and ceph-fuse do; see L</SHARED FILESYSTEMS>). Right after the
lock is granted (and after an C<upgrade>), the file's size is fetched from
the server and this machine's cached pages of the locked bytes (the whole
file for C<lock_file>, the range widened to whole pages for C<lock_range>)
are dropped, so reads see what the previous holder wrote, wherever it ran.
Before the lock is released (and before a C<downgrade>), the file's dirty
data is written back and waited for (fdatasync), so the next holder sees
ours. It covers the locked file itself, through any handle of it on this
machine; a lock file apart from the data does not make the data coherent.
A failure of the write-back cannot stop the release and is not reported:
where you must know, call C<< $guard->fh->sync >> (L<IO::Handle>) first. It
costs a round trip to the server at each end, and on a local disk a
synchronous write at each release, so it is not the default anywhere.

=item create => BOOL

PATH only, default true: create the file if it does not exist. With a false
value a missing file gives undef with C<$!> set to C<ENOENT>.

=item perms => MODE

PATH only, default 0666: permissions of a created file, before the umask.

=item follow_symlinks => BOOL

PATH only, default false: without it a symbolic link at PATH is refused with
C<ELOOP>, so nobody can point your lock file at a file of theirs.

=item unlink => BOOL

PATH only, default false: remove the lock file at release, while still
holding the lock. It is removed only if PATH still names the locked file
and no other process holds a lock on it (a shared holder converts its lock
to exclusive without waiting to find out; if that fails, the file stays).

=back

Lock files opened from a PATH are safe in shared directories: they are
opened with C<O_CLOEXEC> and C<O_NOFOLLOW> and never truncated (their
content survives); when the file cannot be opened read-write (another
user's lock file, a read-only mount) it is opened read-only, which flock(2)
allows; directories can be locked.

Opening PATH never blocks: it is opened with C<O_NONBLOCK> (cleared again on
the descriptor kept, so the guard's C<fh> is an ordinary blocking handle).
A FIFO or a socket at PATH is not a lock file and is refused: undef with
C<$!> set to C<ENXIO> ("No such device or address", what open(2) already
says for a socket), for every caller, whether or not it could write the
FIFO, with or without a timeout. So nobody can make your lock call hang, or
hand you a lock on a FIFO, by planting one where your lock file goes in a
shared directory. The same holds for C<lock_range>, C<range_conflict> and
the C<locker> command. The one thing opening waits for is the break of a
lease another process holds on a regular file (an NFS server's delegation,
a Samba oplock), and that wait counts against the timeout: C<ETIMEDOUT> at
the deadline, C<EWOULDBLOCK> for C<LOCK_NB>, never earlier.

After the lock is granted PATH must
still name the locked file: if another holder removed or replaced it in the
meantime, the lock is dropped and taken again on the file PATH names now,
within the same timeout. So lockers using C<< unlink => 1 >> never both
believe they hold the same exclusive lock.

While C<lock_file> waits, Perl signal handlers run. A handler that dies
aborts the wait: the exception propagates and nothing stays locked or open.
A handler that returns lets the wait go on until the lock or the deadline.

=head2 lock_range(PATH | FH, MODE, OFFSET, LENGTH, %options)

    open my $db, '+<', 'records.dat' or die "open: $!";
    my $guard = lock_range($db, LOCK_EX, $n * 512, 512, timeout => 5)
        or die "record $n busy: $!";

Locks bytes [OFFSET, OFFSET + LENGTH) and returns a L</GUARDS> object
(C<offset> and C<length> tell the range), or undef with C<$!> set as for
C<lock_file>. LENGTH 0 means from OFFSET to the end of the file and beyond,
as in fcntl(2); locks past the end of the file are allowed. OFFSET and
LENGTH must be non-negative integers, and the range must end at or before
the last byte a lock can cover (2**63-1 with a 64-bit C<off_t>): a range
that starts at 2**63-1, or ends there, is locked in the kernel like any
other. Anything else croaks. MODE, C<timeout>, the PATH options and the
behaviour under signals are those of C<lock_file>.

These are open-file-description locks (C<F_OFD_SETLK>, C<F_OFD_SETLKW>)
where the kernel has them (Linux 3.15 and later). They belong to the handle,
not the process:

=over 4

=item *

Two handles of one file in one process conflict like two processes do.

=item *

Closing another descriptor of the same file does not drop them (classic
fcntl locks are all dropped when the process closes I<any> descriptor of the
file).

=item *

They conflict with other programs' fcntl(2) and lockf(3) locks on the same
bytes -- L<File::FcntlLock>, Python's C<fcntl.lockf>, SQLite -- but not with
flock(2) locks on local filesystems.

=item *

C<LOCK_EX> needs a handle open for writing (C<EBADF> otherwise). Through a
PATH, C<LOCK_EX> opens the file read-write or fails with that open's error
-- C<EACCES> for a file you may not write, C<EROFS> on a read-only mount,
C<EISDIR> for a directory -- rather than falling back to read-only (shared
ranges still do).

=back

Guards on one open file description compose, whichever of its descriptors
they were taken through (the same handle, C<< open(my $d, '>&', $fh) >>, a
C<dup>ed descriptor number): each byte stays locked in the strongest mode
that any live guard covering it wants. Releasing or downgrading one guard
gives back only what no other guard needs -- exclusive bytes another guard
holds shared are downgraded, not dropped. An internal table of hold counts
per byte range makes this cost O(log n) in the number of ranges held, not a
scan of them. Guards on different open file descriptions do not compose;
they conflict. See L</OWNERSHIP>.

An upgrade first tries to convert atomically. If that would wait, it gives up
the bytes only this guard holds shared and then waits for the exclusive
lock, so two holders upgrading overlapping ranges at once cannot deadlock
(OFD locks have no deadlock detection); one gets the lock first. As for
whole-file guards, a failed upgrade takes the shared lock back without
waiting where it can, and C<is_locked> tells. Bytes that I<other> guards on
the same handle hold shared stay held while an upgrade waits; a process that
upgrades while holding such overlapping guards should give a timeout.

Where OFD locks do not exist, or when the environment variable
C<FILE_LOCKER_NO_OFD> is set to a true value when the module is loaded
(true as Perl reads it: anything but unset, C<""> and C<"0">, so C<"0.0">
and C<"00"> are true),
classic POSIX locks are used instead, with a process-wide table per device
and inode that keeps the same behaviour for locks taken through File::Locker:
conflicts between handles of one process are detected in the table
(C<EWOULDBLOCK>; a blocking wait that only this single thread could end
fails with C<EDEADLK>, one with a timeout waits for another thread). No
File::Locker call closes a descriptor while the process holds classic locks
on that file, since closing it would drop them: such descriptors are kept
idle and reused by later calls on the same file, so there are never more of
them than guards alive at once on it -- with one exception: a handle from a
guard's C<fh> that your code still holds when the guard goes is kept, with
the guard's descriptor, until the process holds no classic locks on the
file, since that handle shares the guard's open file description. A
descriptor that I<your> code closes still drops the process's classic
locks on that file -- your own handle given to C<lock_range> included --
the kernel gives no way around that; C<is_locked> then says so (it reads
the process's locks in F</proc/locks>).
C<FILE_LOCKER_NO_OFD> is read with Perl's idea of truth: unset, empty and
C<0> are false, anything else (C<0.0> too) is true.

=head2 range_conflict(PATH | FH, MODE, OFFSET, LENGTH)

    if (my $c = range_conflict($db, LOCK_EX, 0, 512)) {
        printf "held %s by %s at %d+%d\n",
            $c->{mode} == LOCK_EX ? 'exclusively' : 'shared',
            $c->{pid} // 'an OFD holder', $c->{offset}, $c->{length};
    }

Asks, without locking anything, whether MODE on that range would conflict
right now. Returns undef if it would be granted (C<$!> is then 0), or one
conflicting lock as C<< { mode => LOCK_SH|LOCK_EX, offset, length, pid } >>
(length 0 means to the end of the file; pid is undef where the kernel does
not tell, as for OFD locks). Locks held through FH itself never conflict with
FH; given a PATH, the file is opened read-only for the question and every
holder counts. A PATH that cannot be opened gives undef with C<$!> set;
opening never blocks, and a FIFO or a socket at PATH gives C<ENXIO>.

=head2 lock_holders(PATH | FH [, waiters => 1])

    for my $h (lock_holders('/var/lock/deploy.lock')) {
        printf "%s holds a %s %s lock on %d+%d: %s\n",
            $h->{pid} // '(not visible)', $h->{mode} == LOCK_EX ? 'exclusive' : 'shared',
            $h->{kind}, $h->{offset}, $h->{length}, $h->{command} // '?';
    }

Lists who holds locks on that file right now, one hashref per holder:
C<pid>, C<kind> (C<'flock'>, C<'posix'> for classic fcntl/lockf locks,
C<'ofd'>), C<mode> (LOCK_SH or LOCK_EX), C<offset> and C<length> (0 to the
end of the file; flock locks are 0 and 0), and C<command>, the holder's
command line where /proc lets us read it (undef otherwise). An empty list
means nobody holds a lock (C<$!> is then 0); a PATH that does not exist
gives an empty list with C<$!> set (C<ENOENT>). An undefined or empty PATH,
or a reference that is not a handle, croaks.

It reads F</proc/locks>. The kernel shows OFD locks there with pid -1 and
flock locks with the pid of the process that took them, even after that
process exited while its descriptor lives on in a child; so the holders of
those two kinds are found instead through F</proc/PID/fdinfo>, which lists
the locks held through each descriptor. A lock shared by several processes
(a descriptor inherited across fork) is reported once per process. A holder
that /proc does not let us see -- another user's process under a restricted
/proc, a process in another pid namespace -- is reported with pid undef
rather than a guess. For diagnostics only: the answer may be stale by the
time you read it, and Linux only.

With C<< waiters => 1 >> the list also has one entry per lock request
blocked on the file, with C<< waiting => 1 >> and the same keys, so "who
waits behind whom" has an answer. They come from the C<< -> >> lines of
F</proc/locks>: C<pid> is the waiting process for flock and classic POSIX
requests, and undef for OFD requests, which the kernel does not attribute.
Any other option croaks.

On network, cluster and FUSE filesystems (recognised by statfs: NFS,
CephFS, SMB, Lustre, 9P, AFS, OCFS2, GFS2 and every FUSE filesystem, such as
GlusterFS), F</proc/locks> shows at best this machine's own holders. There
C<lock_holders> also asks the filesystem, from a new open description of
the file: C<F_OFD_GETLK> (C<F_GETLK> where missing) walks the locked ranges,
and when no range is locked a non-blocking flock(2) try, exclusive then
shared, tells whether someone holds a whole-file lock (that try holds the
lock for an instant, so a third process's C<LOCK_NB> request at that very
moment can fail). What it finds is reported with C<< remote => 1 >>: C<kind>
is C<'posix'> for ranges (where the filesystem emulates flock with POSIX
locks, as NFS and GlusterFS do, a flock holder shows up so, as a range over
the whole file) or C<'flock'>; C<pid> is there only where the filesystem
gives one, and may be a process on another machine, so C<command> is
undef. Holders already listed from F</proc/locks> are not repeated. It never
answers "nobody" while the file is held through another client.

=head2 lock_file_async(PATH | FH, MODE, %options)

C<lock_file> for event loops; described together with the next one.

=head2 lock_range_async(PATH | FH, MODE, OFFSET, LENGTH, %options)

    my $w = lock_file_async('/var/lock/build.lock', LOCK_EX, timeout => 30)
        or die "cannot start waiting: $!";
    # ... hand $w->fh to the event loop; when it is readable:
    my $guard = $w->guard or warn "no lock: $!";

The same locks as C<lock_file> and C<lock_range>, taken without blocking
the caller: each returns a L</WAITERS> object at once, whose handle becomes
readable when the wait ends. The arguments, options, croaks and lock
semantics are those of C<lock_file> and C<lock_range>; C<timeout> counts
from the call, and without it the wait has no bound. The guard a waiter
hands out is an ordinary L</GUARDS> object, composing with the process's
other guards as described in L</OWNERSHIP>.

They return undef with C<$!> set only when the wait cannot even start: a
handle without a descriptor (C<EBADF>), or no thread or descriptor to be
had (C<EAGAIN>, C<EMFILE>). Everything about the lock itself -- busy,
timed out, cancelled, PATH that cannot be opened -- comes from the waiter's
C<guard>.

A free lock is taken during the call, without a thread, and the waiter is
ready at once. A busy one is waited for by a thread of File::Locker's own,
blocked in the kernel (flock(2), C<F_OFD_SETLKW>, or C<F_SETLKW> in the
classic fallback) on the open file description the guard will own: no
polling, no child process, and no Perl code runs on that thread. Its cost,
for each wait pending at one time: one thread with 256 KiB of address space
reserved for its stack (a few pages of it used), one eventfd, and the lock's
own descriptor; hundreds of pending waits are fine, tens of thousands would
meet the system's limits on threads (C<EAGAIN>). The thread is gone once
the waiter is (or once C<cancel> returns).

=head1 GUARDS

A C<File::Locker::Guard> holds one lock until it is released or goes out
of scope. It cannot be copied: C<Storable>'s C<freeze>, C<nfreeze> and
C<dclone> croak with a message naming File::Locker::Guard, and a copy made
some other way owns nothing -- its methods croak, and letting it go neither
releases nor frees anything.

=over 4

=item $guard->release

Unlocks now (flushing the handle first). Returns true. Calling it again
does nothing.

=item $guard->is_locked

True while this guard holds its lock, in the process and thread that took
it. False after C<release>, in a forked child's copy, and after an upgrade
that lost the lock (see below) -- for a whole-file lock also when another
guard on the same open file description lost it that way, since flock(2)
keeps one lock per description.

=item $guard->mode

C<LOCK_SH> or C<LOCK_EX>: the mode last granted to this guard. Another
guard on the same open file description may hold the file more strongly;
see L</OWNERSHIP>.

=item $guard->upgrade(timeout => SECONDS)

=item $guard->upgrade(LOCK_NB)

Converts a shared lock to exclusive, waiting up to SECONDS (without bound if
absent; 0 or C<LOCK_NB> is one try). Returns true, or false with C<$!>
(C<EWOULDBLOCK>, C<ETIMEDOUT>). As with flock(2), the conversion is not
atomic: the shared lock is dropped before the exclusive one is waited for,
so two holders upgrading at once never deadlock -- one gets the lock, then
the other. When an upgrade fails, the guard takes its shared lock back
without waiting; C<is_locked> says whether it could (it cannot if another
process took the exclusive lock in between). Already exclusive: true at
once. Croaks on a released guard.

=item $guard->downgrade

Converts an exclusive lock to shared. Returns true (false with C<$!> only on
a system error, such as C<ENOLCK> when the kernel has no room to split a
lock: the bytes then stay exclusive in the kernel, never less than the
guards want, and C<mode> says shared). Croaks on a released guard.

=item $guard->fh

The locked handle, for I/O under the lock: the handle given to
C<lock_file>, or for a PATH a handle made on first use that duplicates the
locked descriptor (read-write, or read-only where the file could only be
opened so). Its output is flushed before the lock is released.

=item $guard->path, $guard->offset, $guard->length

The PATH, the very string given (a character string stays one; undef for
a lock taken on a handle); offset and length are undef
for whole-file locks, and the range for C<lock_range> guards (length 0: to
the end of the file and beyond).

=back

Signals during C<upgrade> behave as during C<lock_file>.

=head1 OWNERSHIP

A lock belongs to an open file description -- what C<open> creates and
C<dup>, C<< open '>&' >> and C<fork> share -- never to a descriptor number,
and only the kernel says what is held:

=over 4

=item *

Guards taken through any descriptor of one open file description compose:
on each byte the description holds the strongest mode a live guard on it
covers, and releasing one guard leaves what the others cover locked in
their modes. Whole-file guards compose the same way: flock(2) keeps one
mode per description, the strongest live guard's. Guards through different
descriptions conflict, in one process as across processes.

=item *

A guard on your handle keeps its own close-on-exec duplicate of the
description. Closing or reopening your handle under a live guard does not
drop the guard's lock, and a lock taken through the reopened handle -- a
new description, even on the same descriptor number -- conflicts with it.
(Classic fallback excepted: there, closing any descriptor of the file drops
the process's range locks on it.)

=item *

Every lock request goes to the kernel, even when another guard of the same
description already covers the bytes; File::Locker's records only decide
what to ask for and what to give back. The description behind a handle is
found by asking the kernel (kcmp(2)); where kcmp is unavailable, by
flipping the description's C<O_NONBLOCK> status flag, which belongs to the
open file description, and reading it back through the handle (for regular
files and directories only, where that flag changes nothing for anyone's
I/O). Nothing recorded before a C<fork> counts for the
child's own locks.

=item *

Requests through one open file description on overlapping bytes (with
classic locks: through the whole process) go to the kernel one at a time,
so a request decided before another was granted can never undo it. While
one thread's request waits, another thread's request on the same bytes of
the same description waits its turn in the process (signal handlers still
run, and its timeout counts), and a C<LOCK_NB> or C<< timeout => 0 >> one
fails at once with C<EWOULDBLOCK>. Releases and downgrades never wait.
C<is_locked> asks the kernel (F</proc/self/fdinfo>) whether the guard's
description still holds its bytes in its mode.

=back

=head1 WAITERS

A C<File::Locker::Waiter> stands for one wait started by
C<lock_file_async> or C<lock_range_async>.

=over 4

=item $waiter->fh

A read handle that becomes readable when the wait has ended -- granted,
failed, timed out or cancelled -- and stays readable: give it to the event
loop (AnyEvent C<io>, IO::Async C<watch_io>, Mojo::Reactor C<io>, or
C<select>) and never read from it. It is a duplicate made on first use and
kept with the waiter.

=item $waiter->is_ready

True once the wait has ended. Never blocks.

=item $waiter->guard

Before the end: undef with C<$!> set to C<EINPROGRESS>. After a grant: the
guard, handed out once; later calls give undef with C<EALREADY>. After a
failure: undef with C<$!> set, on every call -- C<ETIMEDOUT>, C<ECANCELED>,
C<EWOULDBLOCK> (C<LOCK_NB> or C<< timeout => 0 >> on a busy lock), or the
error of opening PATH or of the lock (C<ENOENT>, C<ELOOP>, C<EBADF> for
C<LOCK_EX> on a range of a read-only handle, C<EDEADLK> in the classic
fallback, ...).

=item $waiter->cancel

Ends the wait now: the thread is interrupted and joined before C<cancel>
returns, and C<guard> then gives undef with C<ECANCELED>. A lock granted in
the meantime and not yet handed out is released at once. A wait that had
already failed keeps its error; a guard already handed out is not affected.
Returns true.

=back

Letting a waiter go (scope exit, C<undef>) cancels it the same way, so a
lock granted after the waiter was dropped is never left held. Waiters
cannot be copied: Storable's C<freeze> and C<dclone> croak, as for guards.

B<The borrowed signal.> To interrupt its blocked thread, and to end timed
waits, File::Locker sends the real-time signal C<SIGRTMIN+5> to that thread
alone. The signal's disposition is set to a no-op handler while at least one
wait is pending (and restored, exactly, when the last waiting thread exits);
the waiting threads block every other signal, so your signal handlers and
C<alarm> keep running on your own thread, and your signal mask is never
changed. A program that itself uses C<SIGRTMIN+5> should not expect to
receive it while waits are pending.

=head1 ERRORS

Lock outcomes -- busy, timed out, interrupted, a handle without a
descriptor, a file that cannot be opened -- are a false or undef return
with C<$!> set, never an exception, and never leave a descriptor open.
Besides the open and lock errors of the system, two values are
File::Locker's own: C<ENXIO> for a FIFO or a socket at PATH, and C<ENOLCK>
for a timed wait on a busy lock whose timer cannot be armed. No call says
C<EWOULDBLOCK> or C<ETIMEDOUT> before its deadline.

Programmer errors in C<lock_file> and guard methods croak with a message
that names the function and the argument: a bad MODE, an unknown option, a
negative or non-numeric timeout, an undefined or empty PATH, a reference
that is not a handle, PATH-only options given with a handle, a method
called on something that is not a guard. C<flock> mirrors core instead: it
croaks only where core croaks.

=head1 FORK AND THREADS

=head2 Guards

A guard releases its lock only in the process, and the thread, that took
it.

After C<fork>, the child has a copy of every guard. What the child may do
with a parent's guard: let it go -- by scope exit, C<undef>, C<release>,
C<exit>, C<die> or global destruction -- which only closes the child's own
copy of the guard's descriptor and leaves the parent's lock held (in the
classic fallback the descriptor stays open if closing it would drop locks
the child has taken itself on that file); read
C<mode>, C<path> and C<fh> (I/O through C<fh> shares the parent's lock, so
coordinate with the parent). What it may not do: C<upgrade> or C<downgrade>
croak in the child, and C<is_locked> is false there, because the lock is not
the child's. Many Perl lock modules get this wrong and release the parent's
lock when a child exits; File::Locker does not. A child that needs the lock
takes its own with C<lock_file>; nothing the parent recorded counts as
held for it, so its lock goes to the kernel and conflicts with the
parent's. A handle the child inherited still shares the parent's open file
description: locks taken through it are the parent's too, as with
C<CORE::flock>. Descriptors opened by C<lock_file>, and the duplicates
guards keep, are close-on-exec, so commands started with C<exec> or
C<system> never inherit the lock.

A new ithread gets no copy of a guard (C<CLONE_SKIP>): inside the thread
the variable refers to an unblessed undef, and creating or joining threads
never releases a lock. An upgrade interrupted by a signal handler that dies
leaves the guard holding nothing (C<is_locked> false).

=head2 Waiters

A waiter belongs to the process and the thread that started it. After
C<fork> the waiting thread does not exist in the child, and the child's copy
of a waiter is inert: C<is_ready> is false, C<guard> gives undef with
C<EPERM>, C<cancel> does nothing, and letting it go only closes the child's
copies of its descriptors -- the parent's wait goes on untouched. (The
child's copy of C<fh> shares the parent's descriptor, so it becomes readable
when the parent's wait ends; the child should not watch it.) The borrowed
signal's disposition is restored in the child. A new ithread gets no copy of
a waiter (C<CLONE_SKIP>).

=head2 flock

A lock taken with C<flock> belongs to the open file description, exactly as
with C<CORE::flock>: after C<fork>, parent and child share it through the
inherited descriptor, C<LOCK_UN> in either releases it for both, and it
lasts until the last descriptor sharing it is closed. A handle opened anew in
the child is a separate description and conflicts with the parent's lock.

Timed waits may run in several threads at once; each thread's timer is aimed
at that thread alone.

=head1 SHARED FILESYSTEMS

File::Locker goes through the kernel, so its locks reach exactly as far as
the filesystem's own lock protocol: between machines on NFS, GlusterFS,
CephFS, SMB and Lustre when those are set up for it, and no further. Each
mount of a shared filesystem is a client; processes on two clients exclude
each other only through the lock kinds the filesystem carries to its
server. Three things differ from a local disk and need care: what happens
to a lock when its client dies or loses the network, who can be seen
holding a lock, and whether the next holder sees the data the previous one
wrote.

Below, B<[measured]> marks what the project's tests and benchmarks saw on
Linux 6.18 with Debian's GlusterFS 10.3 and Ceph 16.2 (two clients of one
volume on one host, each in its own network namespace: set up by
F<.ci/gluster> in the source repository); B<[documented]> marks what the
filesystem's own documentation says and was not measured here.

=head2 Local filesystems (ext4, XFS, Btrfs, tmpfs, ...)

=over 4

=item Locks

One machine. flock(2), classic POSIX and OFD locks are three separate
kinds: flock locks do not see fcntl(2) locks and the other way round.

=item A holder dies

Its locks go when its last descriptor of the lock closes, at once.

=item lock_holders

Sees every holder through F</proc/locks> and F</proc/PID/fdinfo>.

=item Data

The page cache is shared by all processes; nothing to do.

=back

=head2 GlusterFS (FUSE client)

=over 4

=item Locks

flock, classic POSIX and OFD locks all exclude across clients, and flock
and POSIX locks conflict with each other, as on NFS. B<[measured]>
F<t/700_cross_client.t> runs every lock call of this module through one
client against the other, checked with flock(1) and Python's
C<fcntl.lockf>. C<F_GETLK> reports the holder's pid (as seen on the
holder's client, so another machine's pid); C<F_OFD_GETLK> reports -1.
B<[measured]>

Lock files removed at release (C<< unlink => 1 >>) stay exclusive: after
the grant, File::Locker asks the server (not the client's cache of the
directory) whether PATH still names the locked file, and opening retries the
C<ESTALE> and C<EEXIST> answers that a file removed and recreated by another
client gives. Four processes over two clients taking and removing one lock
file 100 times each: no overlap, no error. B<[measured]> (Before that
check forced a fresh answer, the same run let two holders in hundreds of
times.)

=item A holder dies, or its client is cut off

A SIGKILLed holder's lock passes to a waiter on the other client as soon
as its client sees the process gone. B<[measured]> A client cut off from
the network keeps its locks until the server gives up on the connection:
42 s with the default volume options, 4.6 s with
C<server.tcp-user-timeout 5>, C<server.keepalive-time 2>,
C<server.keepalive-interval 1> and C<server.keepalive-count 3> set before
the clients mount. B<[measured]> With C<client.strict-locks on>, the cut-off
holder's descriptor fails with C<EBADFD> once the link is back (writes and
lock calls alike), instead of the client silently taking the lock back
while another machine holds it. B<[measured]>

=item lock_holders

F</proc/locks> shows nothing for locks on FUSE mounts, not even this
machine's own holders. C<lock_holders> and C<locker --holders> ask the
filesystem instead and report the holder with C<< remote => 1 >>, as
C<'posix'>, with the pid GlusterFS gives. B<[measured]>

=item Data

The FUSE client keeps its page cache across lock hand-offs and even across
a fresh open(2): with default settings, four processes on two clients each
adding 1 to a counter in the locked file 250 times under C<LOCK_EX> ended at
500 instead of 1000, and a reader opening the file afresh afterwards still
saw a stale value. B<[measured]> Either lock with C<< coherent => 1 >> --
then the counter is exact (1000 of 1000, with the volume options below and
no special mount option) B<[measured]> -- or mount with
C<--direct-io-mode=enable>, which bypasses the page cache: then the
counter is exact without C<coherent> and fresh reads are current.
B<[measured]>
Either way, turn off the volume's client-side caches that defer writes or
serve stale reads: C<performance.write-behind>, C<performance.quick-read>,
C<performance.open-behind>, C<performance.stat-prefetch> (and
C<performance.read-ahead>, C<performance.io-cache>). A replicated volume
also needs C<cluster.eager-lock off>, or contended locks can deadlock.
B<[measured]>

=item Cost

An uncontended lock and unlock through the mount took about 0.3 ms (1 to
3 microseconds on a local disk), a hand-off from a holder on one client to
a waiter on the other about 0.55 ms (median), and C<< coherent => 1 >>
added about 0.6 ms per lock and unlock (about 55 microseconds on a local
ext4 disk). B<[measured]> F<bench/cross_client.pl> reports these.

=item O_APPEND

Four processes on two clients appending 100 lines each through C<O_APPEND>
handles, each line under an exclusive lock: all 400 lines arrived, with and
without C<coherent>. B<[measured]>

=back

=head2 CephFS (kernel client and ceph-fuse)

=over 4

=item Locks

flock and POSIX locks are shared between clients through the metadata
server. B<[documented]>

=item A client dies or is cut off

The metadata server evicts a client that stops answering it (by default
it is considered stale after 60 s without contact and evicted after 300 s),
and its locks go with it. B<[documented]>

=item lock_holders

Probed as on GlusterFS (statfs names CephFS and FUSE). B<[documented]>

=item Data

With ceph-fuse the counter was exact only with C<fuse disable pagecache =
true> in the client's configuration. B<[measured]> The kernel client keeps
caches coherent through the metadata server's capabilities. B<[documented]>

=item O_APPEND

With ceph-fuse, even with the page cache disabled, appends through
C<O_APPEND> from two clients overwrote each other. B<[measured]> Under a
lock, write at an offset you read under that lock (C<< coherent => 1 >>,
then C<sysseek> to the end), not through C<O_APPEND>.

=back

=head2 NFSv3

=over 4

=item Locks

POSIX locks go to the server through the NLM protocol (lockd); the Linux
client emulates flock(2) with whole-file POSIX locks, so flock and POSIX
locks conflict, and sends OFD locks as POSIX locks. Mounted with C<nolock>
or C<local_lock=...>, locks stay on the client and do not exclude other
machines. B<[documented]>

=item A client dies or is cut off

NLM has no leases: a dead client's locks stay held until it reboots and its
status monitor (statd) tells the server, or an administrator clears them. A
client that is only cut off keeps them. B<[documented]>

=item lock_holders

F</proc/locks> on a client shows that client's holders; other machines'
come from the probe, with a pid only where the client passes one on.
B<[documented]>

=item Data

Close-to-open consistency; on taking a lock the client revalidates its
cache, and on unlock it writes back dirty data, so nothing more is needed.
B<[documented]>

=item O_APPEND

Not atomic between clients: each client appends at the end it believes in.
Append only under a lock. B<[documented]>

=back

=head2 NFSv4

=over 4

=item Locks

Locking is part of the protocol; flock(2) is emulated with whole-file POSIX
locks as on NFSv3, OFD locks are sent as POSIX locks. B<[documented]>

=item A client dies or is cut off

Locks are leased: a client that stops renewing loses them when its lease
expires (90 s by default on Linux's server). A client that comes back after
that gets C<EIO> on the descriptor rather than its locks back.
B<[documented]>

=item lock_holders

As on NFSv3; the server names lock owners, not pids, so the probe usually
reports no pid. B<[documented]>

=item Data

As on NFSv3. B<[documented]>

=item O_APPEND

As on NFSv3. B<[documented]>

=back

=head2 SMB / CIFS

=over 4

=item Locks

The Linux client sends byte-range locks to the server (unless mounted with
C<nobrl>). Against a Windows server they are I<mandatory>: reads and writes
of a range locked through another handle fail, where POSIX locks are
advisory. With the SMB3 POSIX extensions (Samba) they are advisory POSIX
locks. flock(2) is sent as a whole-file lock. B<[documented]>

=item A client dies or is cut off

The server drops its locks when the client's connection ends, or when a
durable or persistent handle's timeout runs out. B<[documented]>

=item lock_holders

Probed; SMB reports no pid. B<[documented]>

=item Data

With the default C<cache=strict> the client caches only under an oplock or
lease, which the server breaks when another client opens the file.
B<[documented]>

=item O_APPEND

Not atomic between clients; append only under a lock. B<[documented]>

=back

=head2 Lustre

=over 4

=item Locks

Shared between clients only when mounted with C<-o flock>; with
C<localflock> they are local to each client, and without either option
flock(2) and fcntl(2) locks fail with C<ENOSYS>. B<[documented]>

=item A client dies or is cut off

Its locks are released when the servers evict it. B<[documented]>

=item lock_holders

Probed. B<[documented]>

=item Data

Lustre's own distributed lock manager keeps data coherent between clients.
B<[documented]>

=item O_APPEND

Appends are serialised by Lustre's extent locks. B<[documented]>

=back

=head2 What to do

Put lock files on the shared filesystem only if every process that must be
excluded locks through that filesystem. Give waits a C<timeout>: a lock can
outlive its holder by the time the filesystem takes to declare a client
dead. Lock the data file itself with C<< coherent => 1 >> (or use mount
options that bypass the page cache) when another machine reads what you
wrote under the lock. Use C<lock_holders> or C<locker --holders> to see who
is in the way; on these filesystems its answer comes from the filesystem.
The test suite runs against any directory named in C<LOCKER_TEST_DIR>, and
F<t/700_cross_client.t> against two mounts of one volume named in
C<LOCKER_TEST_DIRS=A:B>.

=head1 SEE ALSO

L<Fcntl> and C<perldoc -f flock>, whose contract C<flock> keeps.

L<File::FcntlLock> -- fcntl(2) record locks with a full C<struct flock>
interface; no timeouts.

L<File::Flock> and L<File::Flock::Retry> -- lock files by path; their
timeouts, where they have them, retry with C<LOCK_NB> and sleep in between.

L<LockFile::Simple> -- lock files created beside the target, with polling
and stale-lock heuristics rather than kernel locks.

L<IO::LockedFile> -- an L<IO::File> that locks on open.

L<AnyEvent::FileLock> -- whole-file locks for AnyEvent, retried on a timer;
C<lock_file_async> waits in the kernel instead.

=head1 LICENSE

Copyright the File::Locker developers.

This library is free software; you can redistribute it and/or modify it under
the same terms as Perl itself.

=cut
