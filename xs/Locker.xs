/* XS glue between Perl and the File::Locker engine (src/).
 *
 * Thin by design: convert arguments, call the engine, turn its Status into
 * Perl's false + $! in one place. The engine's values used here (Status,
 * Deadline) are trivially destructible, so a Perl signal handler that dies
 * while we dispatch it may unwind through these frames safely; anything that
 * owns a resource lives inside an engine call and is gone before the engine
 * returns. */

#include "deadline.h"
#include "flock_lock.h"
#include "status.h"

#include <errno.h>
#include <math.h>

#define PERL_NO_GET_CONTEXT
extern "C" {
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"
}

namespace {

/* Warns as core's report_evil_fh does for flock() on a handle without an
 * open PerlIO stream, so messages match CORE::flock word for word.
 * fallback_name (may be NULL) names a handle that has no glob at all. */
void
report_evil_fh(pTHX_ GV *gv, IO *io, SV *fallback_name)
{
    const bool closed = io && IoTYPE(io) == IoTYPE_CLOSED;
    const U32 category = closed ? WARN_CLOSED : WARN_UNOPENED;
    if (!ckWARN(category))
        return;
    SV *const name = gv && isGV_with_GP(gv) && GvENAMELEN(gv)
                         ? sv_2mortal(newSVhek(GvENAME_HEK(gv)))
                         : fallback_name;
    const bool have_name = name && SvCUR(name);
    const char *const type =
        io && IoTYPE(io) == IoTYPE_SOCKET ? "socket" : "filehandle";
    Perl_warner(aTHX_ packWARN(category), "flock() on %s %s%s%" SVf,
                closed ? "closed" : "unopened", type, have_name ? " " : "",
                SVfARG(have_name ? name : &PL_sv_no));
    if (io && IoDIRP(io) && !(IoFLAGS(io) & IOf_FAKE_DIRP))
        Perl_warner(aTHX_ packWARN(category),
                    "\t(Are you trying to call flock() on dirhandle%s%" SVf
                    "?)\n",
                    have_name ? " " : "",
                    SVfARG(have_name ? name : &PL_sv_no));
}

/* A plain non-negative integer (IV, integral NV, or a digit string) names a
 * file descriptor; stores it in *fd. */
bool
descriptor_number(pTHX_ SV *sv, int *fd)
{
    UV value;
    if (SvIOK(sv)) {
        if (SvIsUV(sv) ? SvUVX(sv) > INT_MAX : SvIVX(sv) < 0 || SvIVX(sv) > INT_MAX)
            return false;
        *fd = (int)SvIVX(sv);
        return true;
    }
    if (SvNOK(sv)) {
        const NV nv = SvNVX(sv);
        if (!(nv >= 0 && nv <= INT_MAX) || nv != floor(nv))
            return false;
        *fd = (int)nv;
        return true;
    }
    if (SvPOK(sv)) {
        STRLEN len;
        const char *pv = SvPV_nomg_const(sv, len);
        if (grok_number(pv, len, &value) == IS_NUMBER_IN_UV && value <= INT_MAX) {
            *fd = (int)value;
            return true;
        }
    }
    return false;
}

/* Resolves flock's first argument the way CORE::flock does (glob, glob ref,
 * IO object, or a handle name in the caller's package), plus a descriptor
 * number. Returns the descriptor and the stream to flush (NULL for a bare
 * descriptor), or -1 with errno set after warning as core does. Croaks where
 * core's rv2gv croaks. */
int
flock_target(pTHX_ SV *arg, PerlIO **fpp)
{
    GV *gv = NULL;
    IO *io = NULL;
    SV *name = NULL;
    int fd;

    *fpp = NULL;
    SvGETMAGIC(arg);
    if (SvROK(arg)) {
        SV *const target = SvRV(arg);
        if (isGV_with_GP(target))
            gv = (GV *)target;
        else if (SvTYPE(target) == SVt_PVIO)
            io = (IO *)target;
        else
            Perl_croak(aTHX_ "Not a GLOB reference");
    }
    else if (isGV_with_GP(arg)) {
        gv = (GV *)arg;
    }
    else if (!SvOK(arg)) {
        Perl_croak(aTHX_ "Can't use an undefined value as a symbol reference");
    }
    else if (descriptor_number(aTHX_ arg, &fd)) {
        return fd;
    }
    else {
        /* At run time an unqualified name resolves in CopSTASH(PL_curcop),
         * which for an XSUB is the calling statement's package. */
        gv = gv_fetchsv_nomg(arg, 0, SVt_PVIO);
        name = arg;
    }
    if (gv)
        io = GvIO(gv);
    PerlIO *const fp = io ? IoIFP(io) : NULL;
    if (!fp) {
        report_evil_fh(aTHX_ gv, io, name);
        errno = EBADF;
        return -1;
    }
    fd = PerlIO_fileno(fp);
    if (fd < 0) { /* in-memory or tied stream: nothing to lock */
        errno = EBADF;
        return -1;
    }
    *fpp = fp;
    return fd;
}

/* Reads an optional timeout for flock: undef/absent -> unbounded; a
 * negative, NaN or non-numeric value -> false (errno EINVAL). */
bool
flock_deadline(pTHX_ SV *timeout, locker::Deadline *deadline)
{
    if (!timeout || (SvGETMAGIC(timeout), !SvOK(timeout))) {
        *deadline = locker::Deadline::Never();
        return true;
    }
    if (!looks_like_number(timeout)) {
        errno = EINVAL;
        return false;
    }
    const NV seconds = SvNV_nomg(timeout);
    if (Perl_isnan(seconds) || seconds < 0) {
        errno = EINVAL;
        return false;
    }
    *deadline = locker::Deadline::After((double)seconds);
    return true;
}

/* Runs Perl's pending signal handlers (which may die) with errno kept. */
void
dispatch_signals(pTHX)
{
    dSAVE_ERRNO;
    PERL_ASYNC_CHECK();
    RESTORE_ERRNO;
}

}  // namespace

MODULE = File::Locker    PACKAGE = File::Locker

PROTOTYPES: DISABLE

int
flock(fh, operation, timeout = NULL)
    SV *fh
    SV *operation
    SV *timeout
  PROTOTYPE: *$;$
  PREINIT:
    PerlIO *fp;
    locker::Deadline deadline = locker::Deadline::Never();
  CODE:
    const int fd = flock_target(aTHX_ fh, &fp);
    const int op = (int)SvIV(operation);
    RETVAL = 0;
    if (fd >= 0 && flock_deadline(aTHX_ timeout, &deadline)) {
        if (fp)
            (void)PerlIO_flush(fp);
        for (;;) {
            const locker::Status status = locker::Flock(fd, op, deadline);
            if (status.ok()) {
                RETVAL = 1;
                break;
            }
            errno = status.err();
            if (status.err() != EINTR)
                break;
            /* As in core, handlers run and an untimed wait ends with EINTR;
             * a timed wait goes on with the time left. */
            dispatch_signals(aTHX);
            if (deadline.is_never())
                break;
        }
    }
  OUTPUT:
    RETVAL
