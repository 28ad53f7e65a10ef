#!/usr/bin/env perl
# A small Mojolicious service whose requests each take a file lock without
# stalling the others.
#
#   perl eg/locked-service.pl daemon -l http://127.0.0.1:3000
#
#   curl http://127.0.0.1:3000/report/sales &     # takes report-sales.lock
#   curl http://127.0.0.1:3000/report/sales &     # waits for the first one
#   curl http://127.0.0.1:3000/report/stock &     # another lock: runs at once
#   curl http://127.0.0.1:3000/ping               # answered at once, always
#
# /report/NAME builds one report at a time per NAME, also against cron jobs
# or other servers that lock the same file (flock(1), CORE::flock, ...). The
# wait for the lock happens in the kernel on a File::Locker thread; the
# event loop only watches the waiter's handle, so while one request waits,
# every other request is served. LOCK_DIR (default: the system's temporary
# directory) holds the lock files; WORK_SECONDS (default 2) stands for the
# time a report takes.
use strict;
use warnings;

use File::Locker qw(:flock lock_file_async);
use File::Spec;
use Mojo::IOLoop;
use Mojo::Promise;
use Mojolicious::Lite;
use Time::HiRes qw(time);

my $lock_dir = $ENV{LOCK_DIR}     // File::Spec->tmpdir;
my $work     = $ENV{WORK_SECONDS} // 2;

# A promise of a guard for PATH: resolved with the guard once the lock is
# granted, rejected with the reason when the wait fails (timeout, ...).
sub lock_p {
    my ($path, %options) = @_;
    my $waiter = lock_file_async($path, LOCK_EX, %options)
      or return Mojo::Promise->reject("cannot wait for $path: $!");
    my $promise = Mojo::Promise->new;
    my $fh      = $waiter->fh;
    Mojo::IOLoop->singleton->reactor->io($fh => sub {
        my ($reactor) = @_;
        $reactor->remove($fh);
        my $guard = $waiter->guard;
        $guard ? $promise->resolve($guard) : $promise->reject("no lock on $path: $!");
        undef $waiter;    # the wait is over; its thread is gone with it
    })->watch($fh, 1, 0);
    return $promise;
}

get '/report/:name' => sub {
    my ($c) = @_;
    my $name = $c->param('name');
    return $c->render(text => "bad report name\n", status => 400) unless $name =~ /\A\w+\z/;
    my $asked = time;
    $c->render_later;
    lock_p("$lock_dir/report-$name.lock", timeout => 30)->then(sub {
        my ($guard) = @_;
        my $waited = time - $asked;
        # The work under the lock; a timer stands in for slow I/O here.
        return Mojo::Promise->timer($work)->then(sub {
            $c->render(text => sprintf("report %s built by %d after waiting %.2f s for the lock\n",
                $name, $$, $waited));
            undef $guard;    # the next request for this report may go
        });
    })->catch(sub {
        my ($error) = @_;
        $c->render(text => "$error\n", status => 503);
    });
};

get '/ping' => { text => "pong\n" };

app->start;
