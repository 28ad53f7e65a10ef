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
#include "holders.h"
#include "lock.h"
#include "status.h"
#include "waiter.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#define PERL_NO_GET_CONTEXT
extern "C" {
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"
#include "perliol.h"
}

namespace {
struct Guard;
}

/* Per-interpreter state: the guard class's stash, looked up once, and the
 * guards this interpreter made that are still alive (for the exit hook). */
#define MY_CXT_KEY "File::Locker::_guts" XS_VERSION
typedef struct {
    HV *guard_stash;
    AV *kept_handles;   /* @File::Locker::_kept_handles */
    Guard *live_guards; /* a list through Guard::next / Guard::prev */
} my_cxt_t;
START_MY_CXT

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

/* flock's first argument, resolved as core's rv2gv resolves it. */
struct FlockTarget {
    GV *gv = NULL;
    IO *io = NULL;
    SV *name = NULL; /* names a handle that has no glob, for warnings */
    int fd = -1;     /* set for a descriptor number */
};

/* Resolves flock's first argument the way CORE::flock does (glob, glob ref,
 * IO object, an object overloading *{}, or a handle name in the caller's
 * package), plus a descriptor number. Croaks where core's rv2gv croaks;
 * warns nothing (flock_descriptor does, after the operation is read, in
 * core's order). */
FlockTarget
flock_target(pTHX_ SV *arg)
{
    FlockTarget target;
    SvGETMAGIC(arg);
    if (SvROK(arg) && SvAMAGIC(arg)) /* *{} overloading, as rv2gv calls it */
        arg = amagic_deref_call(arg, to_gv_amg);
    if (SvROK(arg)) {
        SV *const referent = SvRV(arg);
        if (isGV_with_GP(referent))
            target.gv = (GV *)referent;
        else if (SvTYPE(referent) == SVt_PVIO) {
            target.io = (IO *)referent;
            target.name = newSVpvs_flags("__ANONIO__", SVs_TEMP); /* as core names it */
        }
        else
            Perl_croak(aTHX_ "Not a GLOB reference");
    }
    else if (isGV_with_GP(arg)) {
        target.gv = (GV *)arg;
    }
    else if (!SvOK(arg)) {
        Perl_croak(aTHX_ "Can't use an undefined value as a symbol reference");
    }
    else if (!descriptor_number(aTHX_ arg, &target.fd)) {
        /* At run time an unqualified name resolves in CopSTASH(PL_curcop),
         * which for an XSUB is the calling statement's package. */
        target.gv = gv_fetchsv_nomg(arg, 0, SVt_PVIO); /* no glob: unnamed, as in core */
    }
    if (target.gv)
        target.io = GvIO(target.gv);
    return target;
}

/* The descriptor behind a resolved flock target and the stream to flush
 * (NULL for a bare descriptor). False with errno EBADF, after warning as
 * core does, for a handle without a stream. A stream without a descriptor
 * (in-memory, tied) gives *fd = -1, which core hands to flock(2) as well:
 * the kernel checks the operation first (EINVAL), then the descriptor. */
bool
flock_descriptor(pTHX_ const FlockTarget &target, int *fd, PerlIO **fpp)
{
    *fpp = NULL;
    *fd = target.fd;
    if (target.fd >= 0)
        return true;
    PerlIO *const fp = target.io ? IoIFP(target.io) : NULL;
    if (!fp) {
        report_evil_fh(aTHX_ target.gv, target.io, target.name);
        errno = EBADF;
        return false;
    }
    *fd = PerlIO_fileno(fp);
    *fpp = fp;
    return true;
}

/* Reads flock's OPERATION as core's pp_flock does (numeric conversion, with
 * its "isn't numeric" and "uninitialized" warnings), but returns -1 (so the
 * engine says EINVAL) unless the value is exactly an integer in int's range:
 * 2.5 or 2**32 + LOCK_EX must not lock.
 *
 * Core words those warnings after the running op, OP_DESC(PL_op), and names
 * the variable by searching that op's children. Ours would say "subroutine
 * entry", so the conversion runs under a copy of the calling entersub op
 * that calls itself flock and keeps the same children: the warnings then
 * read exactly as core's. PL_op is put back through the save stack, so a
 * fatal warning cannot leave it pointing at the copy. */
int
flock_operation(pTHX_ SV *sv)
{
    NV value;
    SvGETMAGIC(sv);
    if (SvIOK(sv) || SvNOK(sv) || !PL_op || PL_op->op_type != OP_ENTERSUB) {
        value = SvNV_nomg(sv);
    }
    else {
        UNOP as_flock;
        Copy(PL_op, &as_flock, 1, UNOP);
        as_flock.op_type = OP_FLOCK;
        as_flock.op_ppaddr = PL_ppaddr[OP_FLOCK];
        ENTER;
        SAVEOP();
        PL_op = (OP *)&as_flock;
        value = SvNV_nomg(sv);
        LEAVE;
    }
    if (!(value >= INT_MIN && value <= INT_MAX) || value != floor(value))
        return -1;
    return (int)value;
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

/* Calls call() -> Status until it is not interrupted, running Perl's
 * signal handlers after each EINTR, as the engine's contract asks. Nothing
 * here owns a resource, so a handler that dies unwinds cleanly. */
template <typename Call>
locker::Status
until_not_interrupted(pTHX_ Call &&call)
{
    for (;;) {
        const locker::Status status = call();
        if (status.err() != EINTR)
            return status;
        dispatch_signals(aTHX);
    }
}

/* True when flushing fp would change nothing: a plain :unix stream with
 * :perlio layers over it, none holding output to write or read-ahead input
 * to discard. Any other layer (crlf, encoding, via, scalar) is flushed, as
 * core always does. */
bool
nothing_buffered(PerlIO *fp)
{
    for (PerlIOl *layer = *fp; layer; layer = layer->next) {
        if (layer->tab == &PerlIO_unix)
            continue;
        if (layer->tab != &PerlIO_perlio || (layer->flags & (PERLIO_F_WRBUF | PERLIO_F_RDBUF)))
            return false;
    }
    return true;
}

/* flock(FH, OPERATION [, TIMEOUT]) for the XSUB and the custom op: 1 when
 * locked or unlocked, 0 with errno set. timeout may be NULL (absent). */
int
flock_call(pTHX_ SV *fh, SV *operation, SV *timeout)
{
    /* In core's order: the handle is resolved (croaks), then the operation
     * read (warns), then a handle without a stream reported (warns). */
    const FlockTarget target = flock_target(aTHX_ fh);
    const int op = flock_operation(aTHX_ operation);
    int fd;
    PerlIO *fp;
    locker::Deadline deadline = locker::Deadline::Never();
    const bool has_stream = flock_descriptor(aTHX_ target, &fd, &fp);
    if (!has_stream || !flock_deadline(aTHX_ timeout, &deadline))
        return 0;
    if (fp && !nothing_buffered(fp))
        (void)PerlIO_flush(fp);
    for (;;) {
        const locker::Status status = locker::Flock(fd, op, deadline);
        if (status.ok())
            return 1;
        errno = status.err();
        if (status.err() != EINTR)
            return 0;
        /* As in core, handlers run and an untimed wait ends with EINTR;
         * a timed wait goes on with the time left. */
        dispatch_signals(aTHX);
        if (deadline.is_never())
            return 0;
    }
}

/* ---- flock as a custom op ---------------------------------------------
 * A call of the imported flock whose sub is known at compile time becomes
 * one op over its 2 or 3 arguments (op_private says how many), so no
 * entersub is paid. &flock, goto &flock and method calls still reach the
 * XSUB. The op describes itself as "flock", so warnings read as core's. */

XOP flock_xop;

OP *
pp_locker_flock(pTHX)
{
    dSP;
    SV *const timeout = PL_op->op_private == 3 ? POPs : NULL;
    SV *const operation = POPs;
    SV *const fh = POPs;
    PUTBACK;
    const int result = flock_call(aTHX_ fh, operation, timeout);
    SPAGAIN;
    dTARGET;
    PUSHi(result);
    PUTBACK;
    return NORMAL;
}

/* True for a call through CORE::GLOBAL::flock (cvop: the entersub's last
 * kid, which names the sub), which stays a sub call as an override of a
 * builtin is expected to. */
bool
is_global_override(pTHX_ OP *cvop)
{
    if (cvop->op_type == OP_NULL && (cvop->op_flags & OPf_KIDS))
        cvop = cUNOPx(cvop)->op_first; /* ex-rv2cv */
    if (cvop->op_type != OP_GV)
        return false;
    GV *const gv = cGVOPx_gv(cvop);
    HV *const stash = gv && isGV_with_GP(gv) ? GvSTASH(gv) : NULL;
    const char *const name = stash ? HvNAME_get(stash) : NULL;
    return name && strEQ(name, "CORE::GLOBAL");
}

/* Call checker: the prototype's checks and contexts first, as for any call
 * (they croak at compile time as before), then the arguments move under
 * the custom op. */
OP *
flock_call_checker(pTHX_ OP *entersub, GV *namegv, SV *protosv)
{
    entersub = ck_entersub_args_proto_or_list(entersub, namegv, protosv);
    OP *parent = entersub;
    OP *pushmark = cUNOPx(entersub)->op_first;
    if (!OpHAS_SIBLING(pushmark)) { /* the arguments sit in an ex-list */
        parent = pushmark;
        pushmark = cUNOPx(pushmark)->op_first;
    }
    int count = 0;
    OP *cvop = OpSIBLING(pushmark);
    for (; cvop && OpHAS_SIBLING(cvop); cvop = OpSIBLING(cvop))
        ++count; /* the last kid is the sub itself, not an argument */
    if (count < 2 || count > 3 || !cvop || is_global_override(aTHX_ cvop))
        return entersub;
    OP *args[3];
    for (int i = 0; i < count; ++i)
        args[i] = op_sibling_splice(parent, pushmark, 1, NULL);
    OP *flockop = newLISTOP(OP_CUSTOM, 0, args[0], args[1]);
    if (count == 3)
        flockop = op_append_elem(OP_CUSTOM, flockop, args[2]);
    flockop->op_ppaddr = pp_locker_flock;
    flockop->op_private = (U8)count;
    flockop->op_targ = pad_alloc(OP_CUSTOM, SVs_PADTMP);
    op_free(entersub);
    return flockop;
}

/* ---- guards ---------------------------------------------------------- */

const char kGuardClass[] = "File::Locker::Guard";

/* What a File::Locker::Guard object owns, through magic on the object's
 * referent (never through its value, so no copy of the object can own it). */
struct Guard final {
    locker::Lock lock;
    PerlInterpreter *owner = nullptr; /* the interpreter (ithread) that locked */
    SV *self = nullptr;               /* the referent the magic is attached to */
    SV *handle = nullptr;             /* counted: user's handle, or fh()'s dup */
    bool borrowed = false;            /* locked through the user's handle */
    bool path_utf8 = false;           /* PATH was a character string */
    IV offset = 0, length = 0;        /* as given, for a range */
    Guard *prev = nullptr, *next = nullptr; /* MY_CXT.live_guards */
};

bool
guard_released(const Guard *guard)
{
    return guard->lock.released();
}

/* Croaks "FUNC: MESSAGE" with the calling function named. */
#define lk_croak(func, ...) Perl_croak(aTHX_ func ": " __VA_ARGS__)

/* The descriptor of a Perl handle (glob, glob ref, IO ref), or -1 with
 * errno EBADF when it has no open descriptor. */
int
handle_fd(pTHX_ SV *handle, PerlIO **fpp)
{
    SV *target = SvROK(handle) ? SvRV(handle) : handle;
    IO *io = NULL;
    if (isGV_with_GP(target))
        io = GvIO((GV *)target);
    else if (SvTYPE(target) == SVt_PVIO)
        io = (IO *)target;
    PerlIO *const fp = io ? IoIFP(io) : NULL;
    const int fd = fp ? PerlIO_fileno(fp) : -1;
    *fpp = fp;
    if (fd < 0)
        errno = EBADF;
    return fd;
}

/* True for a glob, a glob reference or an IO reference. */
bool
is_handle(pTHX_ SV *sv)
{
    if (isGV_with_GP(sv))
        return true;
    if (!SvROK(sv))
        return false;
    SV *const target = SvRV(sv);
    return isGV_with_GP(target) || SvTYPE(target) == SVt_PVIO;
}

/* MODE for lock_file / lock_range: LOCK_SH or LOCK_EX, optionally LOCK_NB. */
int
lock_mode(pTHX_ SV *sv, const char *func)
{
    SvGETMAGIC(sv);
    /* Exactly an integer: 2.5 must not pass as LOCK_EX. */
    const NV value = SvOK(sv) && looks_like_number(sv) ? SvNV_nomg(sv) : -1;
    const int mode = value >= 0 && value <= INT_MAX && value == floor(value) ? (int)value : -1;
    const int base = mode & ~LOCK_NB;
    if (mode < 0 || (base != LOCK_SH && base != LOCK_EX))
        Perl_croak(aTHX_ "%s: MODE must be LOCK_SH or LOCK_EX, optionally | LOCK_NB", func);
    return mode;
}

/* A timeout option: undef -> unbounded; otherwise a non-negative number. */
locker::Deadline
timeout_option(pTHX_ SV *sv, const char *func)
{
    SvGETMAGIC(sv);
    if (!SvOK(sv))
        return locker::Deadline::Never();
    const NV seconds = looks_like_number(sv) ? SvNV_nomg(sv) : -1;
    if (Perl_isnan(seconds) || seconds < 0)
        Perl_croak(aTHX_ "%s: timeout must be a non-negative number of seconds", func);
    return locker::Deadline::After((double)seconds);
}

struct LockOptions {
    locker::Deadline deadline = locker::Deadline::Never();
    locker::PathOptions path;
    bool path_only_given = false;
    bool coherent = false;
};

/* Parses %options of lock_file / lock_range from ST(first) on. */
void
lock_options(pTHX_ SV **args, I32 count, const char *func, LockOptions *out)
{
    if (count % 2)
        Perl_croak(aTHX_ "%s: odd number of option arguments", func);
    for (I32 i = 0; i < count; i += 2) {
        STRLEN len;
        const char *key = SvPV_const(args[i], len);
        SV *const value = args[i + 1];
        /* Compared in place: this loop croaks, so it keeps nothing with a
         * destructor (a std::string key longer than the small-string buffer
         * was leaked by every croak). */
        if (memEQs(key, len, "timeout")) {
            out->deadline = timeout_option(aTHX_ value, func);
            continue;
        }
        if (memEQs(key, len, "coherent")) {
            out->coherent = SvTRUE(value);
            continue;
        }
        out->path_only_given = true;
        if (memEQs(key, len, "create"))
            out->path.create = SvTRUE(value);
        else if (memEQs(key, len, "follow_symlinks"))
            out->path.follow_symlinks = SvTRUE(value);
        else if (memEQs(key, len, "unlink"))
            out->path.unlink = SvTRUE(value);
        else if (memEQs(key, len, "perms")) {
            const NV perms = looks_like_number(value) ? SvNV(value) : -1;
            if (!(perms >= 0 && perms <= 07777) || perms != floor(perms))
                Perl_croak(aTHX_ "%s: perms must be a file mode such as 0666", func);
            out->path.perms = (mode_t)perms;
        }
        else
            Perl_croak(aTHX_ "%s: unknown option '%" SVf "'", func, SVfARG(args[i]));
    }
}

/* PATH argument: a defined, non-empty string without NUL bytes. */
std::string
path_argument(pTHX_ SV *sv, const char *func)
{
    SvGETMAGIC(sv);
    if (!SvOK(sv))
        Perl_croak(aTHX_ "%s: PATH or FH is undefined", func);
    if (SvROK(sv))
        Perl_croak(aTHX_ "%s: PATH or FH expected, not a %s reference", func,
                   sv_reftype(SvRV(sv), 0));
    STRLEN len;
    const char *pv = SvPV_nomg_const(sv, len);
    if (len == 0)
        Perl_croak(aTHX_ "%s: PATH is empty", func);
    if (memchr(pv, 0, len))
        Perl_croak(aTHX_ "%s: PATH contains a NUL byte", func);
    return std::string(pv, len);
}

int guard_free(pTHX_ SV *sv, MAGIC *mg);

/* The magic that ties a Guard to its object: get, set, len, clear, free,
 * copy, dup, local. No dup: a new ithread gets no guard (CLONE_SKIP). */
const MGVTBL guard_vtbl = {NULL, NULL, NULL, NULL, guard_free, NULL, NULL, NULL};

/* The Guard behind a File::Locker::Guard object, or NULL. Only the referent
 * the magic was made for counts: a copy made behind the guard's back
 * (Storable, a cloner that copies magic) owns nothing. */
Guard *
guard_lookup(pTHX_ SV *self)
{
    if (!SvROK(self))
        return NULL;
    SV *const referent = SvRV(self);
    if (!SvOBJECT(referent) || SvTYPE(referent) < SVt_PVMG)
        return NULL;
    MAGIC *const mg = mg_findext(referent, PERL_MAGIC_ext, &guard_vtbl);
    /* mg_obj names the referent the magic was made for, so a copy is told
     * apart without touching a Guard the original may have freed. */
    if (!mg || mg->mg_obj != referent || !mg->mg_ptr)
        return NULL;
    Guard *const guard = (Guard *)mg->mg_ptr;
    return guard->self == referent ? guard : NULL;
}

/* The same, croaking naming the method and the expected class. */
Guard *
guard_from(pTHX_ SV *self, const char *method)
{
    Guard *const guard = guard_lookup(aTHX_ self);
    if (!guard)
        Perl_croak(aTHX_ "%s::%s: invocant is not a %s object", kGuardClass, method,
                   kGuardClass);
    return guard;
}

/* True in the process and interpreter (ithread) that took the lock. */
bool
guard_is_ours(pTHX_ const Guard *guard)
{
    return guard->owner == aTHX && guard->lock.InOwnerProcess();
}

void
guard_require_owner(pTHX_ const Guard *guard, const char *method)
{
    if (!guard_is_ours(aTHX_ guard))
        Perl_croak(aTHX_ "%s::%s: the lock belongs to another process or thread",
                   kGuardClass, method);
}

/* Flushes the guard's Perl handle, so the next holder sees what was
 * printed under the lock. */
void
guard_flush(pTHX_ Guard *guard)
{
    PerlIO *fp;
    if (guard->handle && handle_fd(aTHX_ guard->handle, &fp) >= 0)
        (void)PerlIO_flush(fp);
}

/* Unlocks (owner) or lets go of this process's copy (a forked child). */
void
guard_release(pTHX_ Guard *guard)
{
    if (guard_released(guard))
        return;
    if (guard->owner != aTHX && guard->lock.InOwnerProcess())
        return; /* another ithread's: never ours to touch */
    if (guard_is_ours(aTHX_ guard))
        guard_flush(aTHX_ guard);
    guard->lock.Release();
}

/* Lets go of kept fh() handles whose file has no classic locks left. */
void
sweep_kept_handles(pTHX_ AV *kept)
{
    if (AvFILLp(kept) < 0)
        return;
    for (SSize_t i = AvFILLp(kept); i >= 0; --i) {
        AV *const entry = (AV *)SvRV(AvARRAY(kept)[i]);
        const locker::InodeKey inode{(dev_t)SvUV(AvARRAY(entry)[0]),
                                     (ino_t)SvUV(AvARRAY(entry)[1])};
        if (locker::ClassicLocksHeld(inode))
            continue;
        SV *const gone = AvARRAY(kept)[i];
        AvARRAY(kept)[i] = AvARRAY(kept)[AvFILLp(kept)];
        AvARRAY(kept)[AvFILLp(kept)] = NULL;
        AvFILLp(kept)--;
        SvREFCNT_dec(gone);
    }
}

/* A kept fh() handle that shares lock's open file description (a later
 * guard reusing the description an earlier one kept idle), taken out of
 * the kept list: reusing it keeps their number bounded by the descriptions
 * alive at once. A mortal, or undef. */
SV *
take_kept_handle(pTHX_ const locker::Lock &lock)
{
    dMY_CXT;
    AV *const kept = MY_CXT.kept_handles;
    for (SSize_t i = AvFILLp(kept); i >= 0; --i) {
        AV *const entry = (AV *)SvRV(AvARRAY(kept)[i]);
        PerlIO *fp;
        const int fd = handle_fd(aTHX_ AvARRAY(entry)[2], &fp);
        if (fd < 0 || !locker::SameOpenFile(fd, lock.fd()))
            continue;
        SV *const handle = sv_2mortal(SvREFCNT_inc(AvARRAY(entry)[2]));
        SV *const gone = AvARRAY(kept)[i];
        AvARRAY(kept)[i] = AvARRAY(kept)[AvFILLp(kept)];
        AvARRAY(kept)[AvFILLp(kept)] = NULL;
        AvFILLp(kept)--;
        SvREFCNT_dec(gone);
        return handle;
    }
    return &PL_sv_undef;
}

/* Frees a guard's object: releases the lock as guard_release does. A
 * handle made by fh() whose close would drop this process's classic locks
 * on the file is kept until they are gone. */
int
guard_free(pTHX_ SV *sv, MAGIC *mg)
{
    if (mg->mg_obj != sv || !mg->mg_ptr)
        return 0; /* a copy's magic, or freed already: owns nothing */
    std::unique_ptr<Guard> guard((Guard *)mg->mg_ptr);
    mg->mg_ptr = NULL;
    dMY_CXT;
    if (guard->owner == aTHX) { /* on this interpreter's list */
        if (guard->prev)
            guard->prev->next = guard->next;
        else
            MY_CXT.live_guards = guard->next;
        if (guard->next)
            guard->next->prev = guard->prev;
    }
    /* Classic locks only: with OFD locks no close can drop another lock. */
    const locker::InodeKey inode =
        locker::UsingOfdLocks() ? locker::InodeKey() : guard->lock.inode();
    SV *const handle = guard->handle;
    /* A handle fh() made shares the lock's description. If the caller
     * still has it, the description must never serve as a fresh one again;
     * if only we have it, it may, handing the handle on (take_kept_handle).
     * Either way we keep a reference while closing it would drop the
     * process's classic locks. */
    const bool theirs = handle && !guard->borrowed && SvROK(handle) &&
                        SvREFCNT(SvRV(handle)) > 1;
    if (theirs && guard_is_ours(aTHX_ guard.get()))
        guard->lock.MarkShared();
    guard_release(aTHX_ guard.get());
    const bool keep = handle && !guard->borrowed && locker::ClassicLocksHeld(inode);
    guard.reset();
    AV *const kept = MY_CXT.kept_handles;
    if (keep) {
        AV *const entry = newAV();
        av_push(entry, newSVuv((UV)inode.dev));
        av_push(entry, newSVuv((UV)inode.ino));
        av_push(entry, handle);
        av_push(kept, newRV_noinc((SV *)entry));
    }
    else
        SvREFCNT_dec(handle);
    sweep_kept_handles(aTHX_ kept);
    return 0;
}

/* Wraps a heap Guard in a new mortal File::Locker::Guard object. */
SV *
new_guard_object(pTHX_ std::unique_ptr<Guard> guard)
{
    dMY_CXT;
    SV *const object = newSV_type(SVt_PVMG);
    guard->self = object;
    guard->next = MY_CXT.live_guards;
    if (guard->next)
        guard->next->prev = guard.get();
    MY_CXT.live_guards = guard.get();
    (void)sv_magicext(object, object, PERL_MAGIC_ext, &guard_vtbl, (const char *)guard.release(), 0);
    SV *const rv = sv_2mortal(newRV_noinc(object));
    (void)sv_bless(rv, MY_CXT.guard_stash);
    return rv;
}

/* A byte range for lock_range / range_conflict. */
struct ByteRange {
    bool whole = true;
    locker::Pos start = 0;
    locker::Pos end = 0;
    off_t length = 0; /* as given (0: to end of file) */
};

/* OFFSET and LENGTH: non-negative integers that fit in off_t; croaks. */
ByteRange
range_arguments(pTHX_ SV *offset, SV *length, const char *func)
{
    ByteRange range;
    range.whole = false;
    SV *args[2] = {offset, length};
    const char *names[2] = {"OFFSET", "LENGTH"};
    off_t exact[2];
    for (int i = 0; i < 2; ++i) {
        SvGETMAGIC(args[i]);
        if (!SvOK(args[i]) || !looks_like_number(args[i]))
            Perl_croak(aTHX_ "%s: %s must be a non-negative integer", func, names[i]);
        UV digits;
        STRLEN len;
        const char *pv;
        if (!SvIOK(args[i]) && SvPOK(args[i]) && (pv = SvPV_nomg_const(args[i], len)) &&
            grok_number(pv, len, &digits) == IS_NUMBER_IN_UV) { /* exact decimal string */
            if (digits > (UV)IV_MAX)
                Perl_croak(aTHX_ "%s: %s is too large for this platform's off_t", func, names[i]);
            exact[i] = (off_t)digits;
            continue;
        }
        if (SvIOK(args[i])) { /* exact: NVs lose precision above 2**53 */
            if (SvIsUV(args[i]) ? SvUVX(args[i]) > (UV)IV_MAX : SvIVX(args[i]) < 0) {
                if (SvIsUV(args[i]))
                    Perl_croak(aTHX_ "%s: %s is too large for this platform's off_t", func, names[i]);
                Perl_croak(aTHX_ "%s: %s must be a non-negative integer", func, names[i]);
            }
            exact[i] = (off_t)SvIVX(args[i]);
            continue;
        }
        const NV value = SvNV_nomg(args[i]);
        if (Perl_isnan(value) || value < 0 || value != floor(value))
            Perl_croak(aTHX_ "%s: %s must be a non-negative integer", func, names[i]);
        if (value >= 9223372036854775808.0) /* 2**63: beyond off_t */
            Perl_croak(aTHX_ "%s: %s is too large for this platform's off_t", func, names[i]);
        exact[i] = (off_t)value;
    }
    const off_t start = exact[0];
    const off_t len = exact[1];
    if (!locker::RangeEnd(start, len, &range.end).ok())
        Perl_croak(aTHX_ "%s: OFFSET + LENGTH is too large for this platform's off_t", func);
    range.start = (locker::Pos)start;
    range.length = len;
    return range;
}

/* Takes a lock for lock_file (range.whole) or lock_range: on PATH (opened
 * here) or on the user's handle. Perl signal handlers run during the wait;
 * the wait goes on until the lock or the deadline unless one dies. Returns a
 * mortal guard, or NULL with errno set. */
SV *
take_lock(pTHX_ SV *target, int mode, const ByteRange &range,
          const LockOptions &options, const char *func)
{
    const bool by_handle = is_handle(aTHX_ target);
    if (by_handle && options.path_only_given)
        Perl_croak(aTHX_ "%s: create, perms, follow_symlinks and unlink apply to a PATH only", func);

    int fd = -1;
    if (by_handle) {
        PerlIO *fp;
        fd = handle_fd(aTHX_ target, &fp);
        if (fd < 0)
            return NULL;
        (void)PerlIO_flush(fp);
    }
    for (;;) {
        int err;
        {
            /* Every C++ object with a destructor lives in this block and is
             * gone before Perl signal handlers run (they may die). */
            auto guard = std::make_unique<Guard>();
            locker::Lock &lock = guard->lock;
            lock.set_coherent(options.coherent);
            locker::Status status = locker::Status::Ok();
            if (by_handle) {
                status = range.whole
                             ? lock.AcquireDescriptor(fd, mode, options.deadline)
                             : lock.AcquireDescriptor(fd, mode, range.start, range.end,
                                                      options.deadline);
            }
            else {
                const std::string path = path_argument(aTHX_ target, func);
                status = range.whole
                             ? lock.AcquirePath(path, mode, options.path, options.deadline)
                             : lock.AcquirePath(path, mode, range.start, range.end,
                                                options.path, options.deadline);
            }
            if (status.ok()) {
                guard->owner = aTHX;
                guard->borrowed = by_handle;
                guard->path_utf8 = !by_handle && SvUTF8(target);
                guard->offset = (IV)range.start;
                guard->length = (IV)range.length;
                if (by_handle)
                    guard->handle = SvROK(target) ? newSVsv(target) : newRV_inc(target);
                return new_guard_object(aTHX_ std::move(guard));
            }
            err = status.err();
        }
        errno = err;
        if (err != EINTR)
            return NULL;
        dispatch_signals(aTHX);
    }
}

/* Guard method prologue for methods that change the lock. */
Guard *
guard_for_change(pTHX_ SV *self, const char *method)
{
    Guard *guard = guard_from(aTHX_ self, method);
    guard_require_owner(aTHX_ guard, method);
    if (guard_released(guard))
        Perl_croak(aTHX_ "%s::%s: the guard was released", kGuardClass, method);
    guard_flush(aTHX_ guard);
    return guard;
}


/* ---- waiters (lock_file_async, lock_range_async) ---------------------- */

const char kWaiterClass[] = "File::Locker::Waiter";

/* What a File::Locker::Waiter object owns, through magic on its referent,
 * as for guards. */
struct AsyncWait final {
    std::unique_ptr<locker::Waiter> waiter;
    PerlInterpreter *owner = nullptr; /* the interpreter (ithread) that asked */
    SV *self = nullptr;               /* the referent the magic is attached to */
    SV *handle = nullptr;             /* counted: the user's handle, for the guard */
    SV *fh = nullptr;                 /* counted: the handle fh() made */
    bool borrowed = false;            /* on the user's handle */
    bool path_utf8 = false;
    IV offset = 0, length = 0;
};

int waiter_free(pTHX_ SV *sv, MAGIC *mg);

const MGVTBL waiter_vtbl = {NULL, NULL, NULL, NULL, waiter_free, NULL, NULL, NULL};

AsyncWait *
waiter_lookup(pTHX_ SV *self)
{
    if (!SvROK(self))
        return NULL;
    SV *const referent = SvRV(self);
    if (!SvOBJECT(referent) || SvTYPE(referent) < SVt_PVMG)
        return NULL;
    MAGIC *const mg = mg_findext(referent, PERL_MAGIC_ext, &waiter_vtbl);
    /* As for guards: mg_obj tells a copy's magic apart untouched. */
    if (!mg || mg->mg_obj != referent || !mg->mg_ptr)
        return NULL;
    AsyncWait *const wait = (AsyncWait *)mg->mg_ptr;
    return wait->self == referent ? wait : NULL;
}

AsyncWait *
waiter_from(pTHX_ SV *self, const char *method)
{
    AsyncWait *const wait = waiter_lookup(aTHX_ self);
    if (!wait)
        Perl_croak(aTHX_ "%s::%s: invocant is not a %s object", kWaiterClass, method,
                   kWaiterClass);
    return wait;
}

/* True in the process and interpreter (ithread) that started the wait. */
bool
waiter_is_ours(pTHX_ const AsyncWait *wait)
{
    return wait->owner == aTHX && wait->waiter->InOwnerProcess();
}

/* Frees a waiter's object: the owner cancels the wait (joining its thread
 * and releasing a lock granted meanwhile); a forked child only closes its
 * copies. Another ithread's waiter is never touched. */
int
waiter_free(pTHX_ SV *sv, MAGIC *mg)
{
    if (mg->mg_obj != sv || !mg->mg_ptr)
        return 0; /* a copy's magic, or freed already: owns nothing */
    std::unique_ptr<AsyncWait> wait((AsyncWait *)mg->mg_ptr);
    mg->mg_ptr = NULL;
    if (wait->owner != aTHX && wait->waiter->InOwnerProcess())
        (void)wait->waiter.release(); /* another ithread's wait */
    SV *const handle = wait->handle;
    SV *const fh = wait->fh;
    wait.reset();
    SvREFCNT_dec(handle);
    SvREFCNT_dec(fh);
    return 0;
}

SV *
new_waiter_object(pTHX_ std::unique_ptr<AsyncWait> wait)
{
    SV *const object = newSV_type(SVt_PVMG);
    wait->self = object;
    (void)sv_magicext(object, object, PERL_MAGIC_ext, &waiter_vtbl, (const char *)wait.release(), 0);
    SV *const rv = sv_2mortal(newRV_noinc(object));
    (void)sv_bless(rv, gv_stashpvs("File::Locker::Waiter", GV_ADD));
    return rv;
}

/* Starts an asynchronous lock_file (range.whole) or lock_range. Arguments
 * were checked by the caller (PATH included), so nothing here croaks while
 * a C++ object is alive. Returns a mortal waiter, or NULL with errno set. */
SV *
start_wait(pTHX_ SV *target, int mode, const ByteRange &range,
           const LockOptions &options, const char *func)
{
    const bool by_handle = is_handle(aTHX_ target);
    if (by_handle && options.path_only_given)
        Perl_croak(aTHX_ "%s: create, perms, follow_symlinks and unlink apply to a PATH only", func);
    int fd = -1;
    const char *path = NULL;
    STRLEN path_len = 0;
    if (by_handle) {
        PerlIO *fp;
        fd = handle_fd(aTHX_ target, &fp);
        if (fd < 0)
            return NULL;
        (void)PerlIO_flush(fp);
    }
    else
        path = SvPV_nomg_const(target, path_len);
    int err;
    {
        locker::WaitRequest request;
        request.whole = range.whole;
        request.fd = fd;
        if (!by_handle) {
            request.path.assign(path, path_len);
            request.options = options.path;
        }
        request.mode = mode;
        request.start = range.start;
        request.end = range.whole ? locker::kRangeEnd : range.end;
        request.deadline = options.deadline;
        request.coherent = options.coherent;
        std::unique_ptr<locker::Waiter> waiter;
        const locker::Status status = locker::Waiter::Start(request, &waiter);
        if (status.ok()) {
            auto wait = std::make_unique<AsyncWait>();
            wait->waiter = std::move(waiter);
            wait->owner = aTHX;
            wait->borrowed = by_handle;
            wait->path_utf8 = !by_handle && SvUTF8(target);
            wait->offset = (IV)range.start;
            wait->length = (IV)range.length;
            if (by_handle)
                wait->handle = SvROK(target) ? newSVsv(target) : newRV_inc(target);
            return new_waiter_object(aTHX_ std::move(wait));
        }
        err = status.err();
    }
    errno = err;
    return NULL;
}

/* The guard of an ended wait, once: a mortal guard, or NULL with errno. */
SV *
waiter_guard(pTHX_ AsyncWait *wait)
{
    if (!waiter_is_ours(aTHX_ wait)) {
        errno = EPERM;
        return NULL;
    }
    int err;
    {
        auto guard = std::make_unique<Guard>();
        const locker::Status status = wait->waiter->Finish(&guard->lock);
        if (status.ok()) {
            guard->owner = aTHX;
            guard->borrowed = wait->borrowed;
            guard->path_utf8 = wait->path_utf8;
            guard->offset = wait->offset;
            guard->length = wait->length;
            guard->handle = wait->handle; /* the reference moves to the guard */
            wait->handle = NULL;
            return new_guard_object(aTHX_ std::move(guard));
        }
        err = status.err();
    }
    errno = err;
    return NULL;
}

/* Runs at interpreter exit, after Perl has freed every object it could:
 * releases the locks of guards that are never freed (kept alive by a
 * reference cycle), as their release would have. Guards free themselves
 * through their magic; there is no DESTROY method to call. */
void
release_leftover_guards(pTHX_ void *)
{
    dMY_CXT;
    for (Guard *guard = MY_CXT.live_guards; guard; guard = guard->next)
        guard_release(aTHX_ guard);
}

}  // namespace

MODULE = File::Locker    PACKAGE = File::Locker

PROTOTYPES: DISABLE

BOOT:
{
    MY_CXT_INIT;
    MY_CXT.guard_stash = gv_stashpvs("File::Locker::Guard", GV_ADD);
    MY_CXT.kept_handles = get_av("File::Locker::_kept_handles", GV_ADD);
    MY_CXT.live_guards = NULL;
    perl_atexit(release_leftover_guards, NULL);
    XopENTRY_set(&flock_xop, xop_name, "locker_flock");
    XopENTRY_set(&flock_xop, xop_desc, "flock");
    XopENTRY_set(&flock_xop, xop_class, OA_LISTOP);
    Perl_custom_op_register(aTHX_ pp_locker_flock, &flock_xop);
    CV *const flock_cv = get_cv("File::Locker::flock", 0);
    cv_set_call_checker(flock_cv, flock_call_checker, (SV *)flock_cv);
}

void
CLONE(...)
  PPCODE:
    MY_CXT_CLONE;
    MY_CXT.guard_stash = gv_stashpvs("File::Locker::Guard", GV_ADD);
    MY_CXT.kept_handles = get_av("File::Locker::_kept_handles", GV_ADD);
    MY_CXT.live_guards = NULL; /* the new thread has no guards (CLONE_SKIP) */
    perl_atexit(release_leftover_guards, NULL);
    PERL_UNUSED_VAR(items);
    XSRETURN_EMPTY;

int
flock(fh, operation, timeout = NULL)
    SV *fh
    SV *operation
    SV *timeout
  PROTOTYPE: *$;$
  CODE:
    RETVAL = flock_call(aTHX_ fh, operation, timeout);
  OUTPUT:
    RETVAL

void
lock_file(target, mode, ...)
    SV *target
    SV *mode
  ALIAS:
    lock_file_async = 1
  PPCODE:
    /* LOCK_NB in MODE makes the engine's deadline immediate, opening
     * PATH included. */
    const char *const func = ix ? "lock_file_async" : "lock_file";
    const int lock = lock_mode(aTHX_ mode, func);
    LockOptions options;
    lock_options(aTHX_ &ST(2), items - 2, func, &options);
    if (!is_handle(aTHX_ target))
        (void)path_argument(aTHX_ target, func); /* croak before locking */
    SV *const result = ix ? start_wait(aTHX_ target, lock, ByteRange(), options, func)
                          : take_lock(aTHX_ target, lock, ByteRange(), options, func);
    ST(0) = result ? result : &PL_sv_undef;
    XSRETURN(1);

void
lock_range(target, mode, offset, length, ...)
    SV *target
    SV *mode
    SV *offset
    SV *length
  ALIAS:
    lock_range_async = 1
  PPCODE:
    const char *const func = ix ? "lock_range_async" : "lock_range";
    const int lock = lock_mode(aTHX_ mode, func);
    const ByteRange range = range_arguments(aTHX_ offset, length, func);
    LockOptions options;
    lock_options(aTHX_ &ST(4), items - 4, func, &options);
    if (!is_handle(aTHX_ target))
        (void)path_argument(aTHX_ target, func);
    SV *const result = ix ? start_wait(aTHX_ target, lock, range, options, func)
                          : take_lock(aTHX_ target, lock, range, options, func);
    ST(0) = result ? result : &PL_sv_undef;
    XSRETURN(1);

void
range_conflict(target, mode, offset, length)
    SV *target
    SV *mode
    SV *offset
    SV *length
  PPCODE:
    const int want = lock_mode(aTHX_ mode, "range_conflict") & ~LOCK_NB;
    const ByteRange range = range_arguments(aTHX_ offset, length, "range_conflict");
    if (!is_handle(aTHX_ target))
        (void)path_argument(aTHX_ target, "range_conflict");
    locker::Conflict conflict;
    int err = 0;
    if (is_handle(aTHX_ target)) {
        PerlIO *fp;
        const int fd = handle_fd(aTHX_ target, &fp);
        err = fd < 0 ? errno : locker::FindConflict(fd, want, range.start, range.end, &conflict).err();
    }
    else {
        err = locker::FindConflictAt(path_argument(aTHX_ target, "range_conflict"), want,
                                     range.start, range.end, &conflict).err();
    }
    errno = err; /* 0 when the answer is "free" */
    if (err || !conflict.found)
        XSRETURN_UNDEF;
    HV *const hv = newHV();
    ST(0) = sv_2mortal(newRV_noinc((SV *)hv));
    (void)hv_stores(hv, "mode", newSViv(conflict.mode));
    (void)hv_stores(hv, "offset", newSViv((IV)conflict.start));
    (void)hv_stores(hv, "length", newSViv((IV)conflict.length));
    (void)hv_stores(hv, "pid", conflict.pid > 0 ? newSViv(conflict.pid) : newSV(0));
    errno = 0;
    XSRETURN(1);

void
lock_holders(target, ...)
    SV *target
  PPCODE:
    const char *const func = "lock_holders";
    bool waiters = false;
    if ((items - 1) % 2)
        Perl_croak(aTHX_ "%s: odd number of option arguments", func);
    for (I32 i = 1; i < items; i += 2) {
        if (strEQ(SvPV_nolen(ST(i)), "waiters"))
            waiters = SvTRUE(ST(i + 1));
        else
            Perl_croak(aTHX_ "%s: unknown option '%" SVf "'", func, SVfARG(ST(i)));
    }
    std::vector<locker::Holder> holders;
    int err = 0;
    {
        struct stat st;
        int rc;
        int probe_fd = -1;
        std::string probe_path;
        if (is_handle(aTHX_ target)) {
            PerlIO *fp;
            const int fd = handle_fd(aTHX_ target, &fp);
            rc = fd < 0 ? -1 : fstat(fd, &st);
            probe_fd = fd;
        }
        else {
            probe_path = path_argument(aTHX_ target, func);
            rc = stat(probe_path.c_str(), &st);
        }
        if (rc != 0)
            err = errno;
        else
            err = locker::ListHolders(st.st_dev, st.st_ino, &holders).err();
        if (!err && waiters)
            err = locker::ListWaiters(st.st_dev, st.st_ino, &holders).err();
        if (!err) /* network and FUSE filesystems: ask the filesystem too */
            err = locker::AddProbedHolders(probe_fd, probe_path, &holders).err();
    }
    errno = err; /* 0 on success, so an empty list is told apart from a failure */
    if (err)
        XSRETURN_EMPTY;
    EXTEND(SP, (SSize_t)holders.size());
    for (const locker::Holder &holder : holders) {
        HV *const hv = newHV();
        (void)hv_stores(hv, "pid", holder.pid > 0 ? newSViv(holder.pid) : newSV(0));
        (void)hv_stores(hv, "kind", newSVpvn(holder.kind.data(), holder.kind.size()));
        (void)hv_stores(hv, "mode", newSViv(holder.mode));
        (void)hv_stores(hv, "offset", newSViv((IV)holder.start));
        (void)hv_stores(hv, "length", newSViv((IV)holder.length));
        if (holder.remote)
            (void)hv_stores(hv, "remote", newSViv(1));
        (void)hv_stores(hv, "command",
                        holder.command.empty()
                            ? newSV(0)
                            : newSVpvn(holder.command.data(), holder.command.size()));
        if (holder.waiting)
            (void)hv_stores(hv, "waiting", newSViv(1));
        mPUSHs(newRV_noinc((SV *)hv));
    }
    XSRETURN((IV)holders.size());

void
_using_ofd_locks()
  PPCODE:
    ST(0) = boolSV(locker::UsingOfdLocks());
    XSRETURN(1);

MODULE = File::Locker    PACKAGE = File::Locker::Guard

void
release(self)
    SV *self
  PPCODE:
    guard_release(aTHX_ guard_from(aTHX_ self, "release"));
    XSRETURN_YES;

void
is_locked(self)
    SV *self
  PPCODE:
    const Guard *guard = guard_from(aTHX_ self, "is_locked");
    /* What the kernel holds, not what the guard remembers. */
    const bool held = guard->lock.held() && guard->lock.KernelHolds();
    ST(0) = boolSV(held && guard_is_ours(aTHX_ guard));
    XSRETURN(1);

void
mode(self)
    SV *self
  PPCODE:
    const Guard *guard = guard_from(aTHX_ self, "mode");
    XSRETURN_IV(guard->lock.mode());

void
path(self)
    SV *self
  PPCODE:
    const Guard *guard = guard_from(aTHX_ self, "path");
    if (guard->borrowed)
        XSRETURN_UNDEF;
    const std::string &path = guard->lock.path();
    ST(0) = sv_2mortal(newSVpvn(path.data(), path.size()));
    if (guard->path_utf8)
        SvUTF8_on(ST(0));
    XSRETURN(1);

void
offset(self)
    SV *self
  ALIAS:
    length = 1
  PPCODE:
    const Guard *guard = guard_from(aTHX_ self, ix ? "length" : "offset");
    if (guard->lock.whole())
        XSRETURN_UNDEF; /* whole-file lock */
    XSRETURN_IV(ix == 0 ? guard->offset : guard->length);

void
upgrade(self, ...)
    SV *self
  PPCODE:
    const char *const func = "File::Locker::Guard::upgrade";
    locker::Deadline deadline = locker::Deadline::Never();
    I32 first = 1;
    if ((items - 1) % 2) { /* upgrade(LOCK_NB, ...) */
        if (SvNV(ST(1)) != LOCK_NB) /* exactly: 4.5 is no flag */
            Perl_croak(aTHX_ "%s: the only flag allowed is LOCK_NB", func);
        deadline = locker::Deadline::Now();
        first = 2;
    }
    if ((items - first) % 2)
        Perl_croak(aTHX_ "%s: odd number of option arguments", func);
    for (I32 i = first; i < items; i += 2) {
        STRLEN len;
        const char *key = SvPV_const(ST(i), len);
        if (len != 7 || memcmp(key, "timeout", 7) != 0)
            Perl_croak(aTHX_ "%s: unknown option '%" SVf "'", func, SVfARG(ST(i)));
        const locker::Deadline timeout = timeout_option(aTHX_ ST(i + 1), func); /* always checked */
        if (!deadline.is_immediate()) /* LOCK_NB wins */
            deadline = timeout;
    }
    Guard *guard = guard_for_change(aTHX_ self, "upgrade");
    const locker::Status status = until_not_interrupted(aTHX_ [&] {
        return guard->lock.Upgrade(deadline);
    });
    if (!status.ok())
        errno = status.err();
    ST(0) = boolSV(status.ok());
    XSRETURN(1);

void
downgrade(self)
    SV *self
  PPCODE:
    Guard *guard = guard_for_change(aTHX_ self, "downgrade");
    const locker::Status status = until_not_interrupted(aTHX_ [&] {
        return guard->lock.Downgrade();
    });
    if (!status.ok())
        errno = status.err();
    ST(0) = boolSV(status.ok());
    XSRETURN(1);

void
_handle(self)
    SV *self
  PPCODE:
    const Guard *guard = guard_from(aTHX_ self, "fh");
    ST(0) = guard->handle ? sv_2mortal(newSVsv(guard->handle)) : &PL_sv_undef;
    XSRETURN(1);

void
_set_handle(self, handle)
    SV *self
    SV *handle
  PPCODE:
    Guard *guard = guard_from(aTHX_ self, "fh");
    SV *const old = guard->handle;
    guard->handle = newSVsv(handle);
    SvREFCNT_dec(old);
    XSRETURN_EMPTY;

void
_descriptor(self)
    SV *self
  PPCODE:
    Guard *guard = guard_from(aTHX_ self, "fh");
    if (guard_released(guard))
        XSRETURN_EMPTY;
    EXTEND(SP, 3);
    mPUSHi(guard->lock.fd());
    PUSHs(boolSV(guard->lock.writable()));
    PUSHs(take_kept_handle(aTHX_ guard->lock));
    XSRETURN(3);

void
_leave_locked(self)
    SV *self
  PPCODE:
    /* Lets go without unlocking (the locker command's exit, as flock(1)'s):
     * the kernel keeps the lock while another descriptor of it is open. */
    Guard *guard = guard_for_change(aTHX_ self, "_leave_locked");
    guard->lock.Abandon();
    XSRETURN_EMPTY;


MODULE = File::Locker    PACKAGE = File::Locker::Waiter

void
is_ready(self)
    SV *self
  PPCODE:
    const AsyncWait *wait = waiter_from(aTHX_ self, "is_ready");
    ST(0) = boolSV(waiter_is_ours(aTHX_ wait) && wait->waiter->Ended());
    XSRETURN(1);

void
guard(self)
    SV *self
  PPCODE:
    SV *const guard = waiter_guard(aTHX_ waiter_from(aTHX_ self, "guard"));
    ST(0) = guard ? guard : &PL_sv_undef;
    XSRETURN(1);

void
cancel(self)
    SV *self
  PPCODE:
    AsyncWait *wait = waiter_from(aTHX_ self, "cancel");
    if (waiter_is_ours(aTHX_ wait))
        wait->waiter->Cancel();
    XSRETURN_YES;

void
_handle(self)
    SV *self
  PPCODE:
    const AsyncWait *wait = waiter_from(aTHX_ self, "fh");
    ST(0) = wait->fh ? sv_2mortal(newSVsv(wait->fh)) : &PL_sv_undef;
    XSRETURN(1);

void
_set_handle(self, handle)
    SV *self
    SV *handle
  PPCODE:
    AsyncWait *wait = waiter_from(aTHX_ self, "fh");
    SV *const old = wait->fh;
    wait->fh = newSVsv(handle);
    SvREFCNT_dec(old);
    XSRETURN_EMPTY;

void
_descriptor(self)
    SV *self
  PPCODE:
    const AsyncWait *wait = waiter_from(aTHX_ self, "fh");
    XSRETURN_IV(wait->waiter->fd());

void
_threaded(self)
    SV *self
  PPCODE:
    const AsyncWait *wait = waiter_from(aTHX_ self, "_threaded");
    ST(0) = boolSV(wait->waiter->threaded());
    XSRETURN(1);

void
DESTROY(self)
    SV *self
  PPCODE:
    /* Ends the wait at once, as guards release at once. */
    if (waiter_lookup(aTHX_ self))
        (void)waiter_free(aTHX_ SvRV(self),
                          mg_findext(SvRV(self), PERL_MAGIC_ext, &waiter_vtbl));
    XSRETURN_EMPTY;
