package File::Locker::Command;

# The less travelled paths of the locker command: -v reports, the FD form,
# -u with a LOCKFILE, --holders, and failures. bin/locker keeps what a plain
# run needs and loads this file only when one of these paths is taken, so
# that a plain run compiles less; these subs call back into bin/locker's
# own (main::acquire, main::lock_call, main::complain, ...). Internal: not
# an API.

use strict;
# No "use warnings": bin/locker runs under -w, and the FD form, which shell
# scripts use often, should not pay for loading warnings.pm.

use File::Locker qw(LOCK_SH LOCK_EX LOCK_UN LOCK_NB lock_range);

our $VERSION = $File::Locker::VERSION;

# Exit codes from sysexits.h, as util-linux flock(1) uses them.
sub EX_DATAERR   () { 65 }
sub EX_NOINPUT   () { 66 }
sub EX_OSERR     () { 71 }
sub EX_CANTCREAT () { 73 }

my $ME = 'locker';

# acquire with -v: says who is in the way while it waits, and how long
# it took.
sub acquire_verbose {
    my ($opt, $what, $try) = @_;
    my $timeout = $opt->{timeout};
    require Time::HiRes;
    my $started = Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC());
    my $waited = sub { Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) - $started };
    my $got = $try->(0);
    # Wait in slices of at most a second to report who is in the way. Each
    # slice blocks in the kernel and ends the moment the lock is released.
    while (!$got && (main::failed('EWOULDBLOCK') || main::failed('ETIMEDOUT'))) {
        my $left = defined $timeout ? $timeout - $waited->() : 1;
        last if $left <= 0;
        report_holders($opt, $what, $waited->());
        $got = $try->($left < 1 ? $left : 1);
    }
    if ($got) {
        my $took = $waited->();
        printf "%s: getting lock took %d.%06d seconds\n", $ME, int $took,
          int(($took - int $took) * 1e6);
    }
    elsif (main::failed('EWOULDBLOCK') && defined $timeout && $timeout > 0) {
        $! = Errno::ETIMEDOUT();    # Errno is loaded by now    # the last slice was a try
    }
    return $got;
}

# While -v waits: who holds a lock that conflicts with ours.
sub report_holders {
    my ($opt, $what, $waited) = @_;
    my ($start, $end) = request_span($opt);
    my @in_way = grep {
        my $h = $_;
        # Where the filesystem reports holders itself (remote), it emulates
        # flock with POSIX locks: every kind is in the way of every kind.
        ($h->{remote} || ($opt->{fcntl} ? $h->{kind} ne 'flock' : $h->{kind} eq 'flock'))
          && ($h->{mode} == LOCK_EX || $opt->{mode} == LOCK_EX)
          && overlaps($start, $end, $h->{offset}, $h->{length} ? $h->{offset} + $h->{length} : undef)
          && !(defined $h->{pid} && $h->{pid} == $$)
    } File::Locker::lock_holders($what->{target});
    my $who = @in_way ? join('; ', map { describe_holder($_) } @in_way) : 'no holder visible';
    printf STDERR "%s: waiting for %s (%.1f s): %s\n", $ME, $what->{name}, $waited, $who;
}

# [start, end) of the lock %$opt asks for; end undef: to end of file.
sub request_span {
    my ($opt) = @_;
    return (0, undef) unless $opt->{fcntl};
    my ($start, $length) = ($opt->{start} // 0, $opt->{length} // 0);
    return ($start, $length ? $start + $length : undef);
}

sub overlaps {
    my ($a0, $a1, $b0, $b1) = @_;
    return (!defined $a1 || $b0 < $a1) && (!defined $b1 || $a0 < $b1);
}

sub describe_holder {
    my ($h) = @_;
    return sprintf '%s %s %s by %s%s', $h->{mode} == LOCK_EX ? 'exclusive' : 'shared',
      $h->{kind}, range_text($h, 'bytes '),
      defined $h->{pid} ? "pid $h->{pid}" : 'a process we cannot see',
      defined $h->{command} ? ' (' . printable($h->{command}) . ')'
      : $h->{remote} ? ' (as the filesystem reports it; maybe on another machine)' : '';
}

sub range_text {
    my ($h, $prefix) = @_;
    return 'whole file' if $h->{kind} eq 'flock';
    return $prefix . $h->{offset} . ($h->{length} ? '+' . $h->{length} : '-EOF');
}

# TEXT with control characters, backslashes and anything else unprintable
# escaped, so that a command line cannot forge rows or move the cursor.
sub printable {
    my ($text) = @_;
    my %named = ("\n" => '\n', "\t" => '\t', "\r" => '\r', "\e" => '\e', '\\' => '\\\\');
    if (utf8::decode(my $chars = $text)) {
        $chars =~ s{([\\\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}])}
                   { $named{$1} // sprintf(ord $1 < 256 ? '\x%02x' : '\x{%04x}', ord $1) }ge;
        utf8::encode($chars);
        return $chars;
    }
    $text =~ s{([\\\x00-\x1f\x7f-\xff])}{ $named{$1} // sprintf('\x%02x', ord $1) }ge;
    return $text;
}

# Exit status for a failed lock call on NAME: PATH for LOCKFILE, undef for
# the FD form. Messages and codes as flock(1)'s.
sub lock_failed {
    my ($opt, $name, $path) = @_;
    if (main::failed('EWOULDBLOCK') || main::failed('ETIMEDOUT') || main::failed('EACCES') && !defined $path) {
        if ($opt->{verbose}) {
            main::complain(main::failed('ETIMEDOUT') ? 'timeout while waiting to get lock' : 'failed to get lock');
        }
        return $opt->{exit_code};
    }
    if (!defined $path || main::failed('ENOLCK')) {    # the lock call itself failed
        main::complain("$name: $!");
        return main::failed('ENOLCK') || main::failed('ENOMEM') ? EX_OSERR : EX_DATAERR;
    }
    if (main::failed('ELOOP') && !$opt->{follow} && do { local $!; -l $path }) {
        main::complain("cannot open lock file $path: it is a symbolic link;"
                 . ' use --follow-symlinks to lock the file it points to');
        return EX_NOINPUT;
    }
    if ((main::failed('EBADF') || main::failed('EACCES') || main::failed('EPERM'))
        && $opt->{fcntl} && $opt->{mode} == LOCK_EX) {
        main::complain("cannot open lock file $path for writing, which an exclusive"
                 . " byte-range lock needs: $!");
        return EX_NOINPUT;
    }
    my $status = main::failed('ENOMEM') || main::failed('EMFILE') || main::failed('ENFILE') ? EX_OSERR
      : main::failed('EROFS') || main::failed('ENOSPC') ? EX_CANTCREAT
      : EX_NOINPUT;
    main::complain("cannot open lock file $path: $!");
    return $status;
}

# Opens PATH as flock(1) does for -u, without locking it.
sub open_only {
    my ($path, $opt) = @_;
    my $flags = Fcntl::O_RDONLY() | Fcntl::O_CREAT() | Fcntl::O_NOCTTY() | Fcntl::O_NONBLOCK();
    $flags |= Fcntl::O_NOFOLLOW() unless $opt->{follow};
    my $fh;
    return $fh if sysopen($fh, $path, $flags, 0666);
    return unless main::failed('EISDIR');    # a directory: without O_CREAT, as flock(1)
    return sysopen($fh, $path, Fcntl::O_RDONLY() | Fcntl::O_NONBLOCK()) ? $fh : undef;
}

# flock(1)'s "locker [options] FD": lock or unlock a descriptor the shell
# opened, e.g.  ( locker -n 9 || exit 1; ... ) 9>/var/lock/job.lock
sub descriptor_mode {
    my ($fd, $opt) = @_;
    my $what = { name => $fd };
    if (!$opt->{fcntl}) {
        # flock(2) on the shell's descriptor: the lock stays with it.
        my $op = $opt->{mode};
        my $try = sub {
            my ($timeout) = @_;
            my $nb = defined $timeout && $timeout == 0 ? LOCK_NB : 0;
            while (1) {
                local $^W = 0;    # a closed FD is reported below
                my $ok = defined $timeout && !$nb
                  ? File::Locker::flock($fd, $op, $timeout) : File::Locker::flock($fd, $op | $nb);
                return $ok if $ok || !main::failed('EINTR');
            }
        };
        $what->{target} = descriptor_handle($fd) if $opt->{verbose};
        main::acquire($opt, $what, $try) or return lock_failed($opt, $fd);
        return 0;
    }
    if ($opt->{mode} != LOCK_UN && !File::Locker::_using_ofd_locks()) {
        # A classic POSIX lock is ours, not the shell's: it would end with us.
        main::complain('cannot lock a byte range for the shell here:'
                       . ' this system has no open-file-description locks');
        return 64;
    }
    my $fh = descriptor_handle($fd) or do { main::complain("$fd: $!"); return EX_DATAERR };
    if ($opt->{mode} == LOCK_UN) {
        unlock_range($fh, request_span($opt)) or return lock_failed($opt, $fd);
        main::acquire($opt, undef, sub { 1 });
        return 0;
    }
    $what->{target} = $fh;
    my $guard = main::acquire($opt, $what, sub { main::lock_call($fh, $opt, @_) })
      or return lock_failed($opt, $fd);
    # The lock belongs to the shell's open file: leave it locked.
    main::leave_locked($guard);
    return 0;
}

# A Perl handle on descriptor FD (the same descriptor), or undef with $!.
sub descriptor_handle {
    my ($fd) = @_;
    for my $how ('+<&=', '>&=', '<&=') {
        my $fh;
        return $fh if open($fh, $how, $fd);
        return unless main::failed('EINVAL');    # EINVAL: the wrong access mode
    }
    return;
}

# Unlocks [START, END) (END undef: to end of file) of the open file FH's
# byte-range locks, as an F_UNLCK would: takes the bytes shared without
# waiting and gives them back. Bytes another open file holds exclusively
# (or, through a write-only descriptor, in any mode) are not ours; the
# bytes around them are unlocked.
sub unlock_range {
    my ($fh, $start, $end) = @_;
    # The probe takes what the descriptor can hold: shared locks need it
    # readable, exclusive ones writable, so a write-only one has only those.
    my $flags = fcntl($fh, Fcntl::F_GETFL(), 0) // return 0;
    my $probe = ($flags & Fcntl::O_ACCMODE()) == Fcntl::O_WRONLY() ? LOCK_EX : LOCK_SH;
    my @todo = ([$start, $end]);
    my $rounds = 0;
    while (my $span = shift @todo) {
        my ($from, $to) = @$span;
        next if defined $to && $to <= $from;
        my $length = defined $to ? $to - $from : 0;
        if (my $guard = lock_range($fh, $probe, $from, $length, timeout => 0)) {
            $guard->release;
            next;
        }
        return 0 unless main::failed('EWOULDBLOCK') && ++$rounds < 10_000;
        my $in_way = File::Locker::range_conflict($fh, $probe, $from, $length);
        if (!$in_way) { push @todo, $span; next }    # gone meanwhile: again
        my $lo = $in_way->{offset};
        my $hi = $in_way->{length} ? $lo + $in_way->{length} : undef;
        push @todo, [$from, $lo] if $lo > $from;
        push @todo, [$hi, $to] if defined $hi;
    }
    return 1;
}

sub holders {
    my ($opt, @args) = @_;
    return try_help('--holders takes one LOCKFILE') unless @args == 1;
    my ($target) = @args;
    $! = 0;
    my @found = File::Locker::lock_holders($target, waiters => $opt->{waiters} ? 1 : 0);
    if (!@found && $!) {
        main::complain("cannot inspect $target: $!");
        return EX_NOINPUT;
    }
    my $waiters = $opt->{waiters};
    my $format = $waiters ? "%-8s %-6s %-6s %-9s %-21s %s\n" : "%-8s%s %-6s %-9s %-21s %s\n";
    printf $format, 'PID', $waiters ? 'STATE' : '', qw(KIND MODE RANGE COMMAND);
    for my $h (@found) {
        my $command = defined $h->{command} ? printable($h->{command})
          : $h->{remote} ? '(reported by the filesystem; maybe another machine)'
          : defined $h->{pid} ? ''
          : $h->{waiting} ? '(waiter not named by the kernel)' : '(holder not visible to us)';
        printf $format, $h->{pid} // '?', $waiters ? $h->{waiting} ? 'waits' : 'holds' : '',
          $h->{kind}, $h->{mode} == LOCK_EX ? 'exclusive' : 'shared', range_text($h, ''), $command;
    }
    return 0;
}

1;
__END__

=head1 NAME

File::Locker::Command - internal part of the locker command

=head1 DESCRIPTION

The parts of L<locker> that a plain run does not need, loaded on demand.
Not an API: see L<locker> and L<File::Locker>.

=cut
