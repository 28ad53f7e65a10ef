/* XS glue between Perl and the File::Locker engine (src/).
 *
 * Each XSUB reads and checks every argument first (croaking on a bad one),
 * then calls the engine, then turns the result into Perl values, lock
 * outcomes into false/undef with $! set. Perl_croak and a signal handler
 * that dies both longjmp past C++ destructors, so C++ objects that own
 * anything live only inside the engine calls, which never croak; the
 * values kept across them (Status, Deadline, the option structs) are
 * trivially destructible. */

#include "deadline.h"
#include "flock_lock.h"
#include "holders.h"
#include "kept_files.h"
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

/* Per-interpreter state: the classes' stashes, looked up once, and the
 * guards this interpreter made that are still alive (for the exit hook). */
#define MY_CXT_KEY "File::Locker::_guts" XS_VERSION
typedef struct {
    HV *guard_stash;
    HV *waiter_stash;
    Guard *live_guards; /* a list through Guard::next / Guard::prev */
} my_cxt_t;
START_MY_CXT

namespace {

const char kGuardClass[] = "File::Locker::Guard";
const char kWaiterClass[] = "File::Locker::Waiter";

/* ---- handles ----------------------------------------------------------- */

/* A Perl handle: a glob, a glob reference or an IO reference. */
struct Handle {
    GV *gv = NULL; /* its glob, if it has one */
    IO *io = NULL; /* NULL for a glob without one */
};

/* Resolves sv as a Handle; false for anything else. Inline: flock's hot
 * path. */
inline bool
as_handle(SV *sv, Handle *out)
{
    SV *const target = SvROK(sv) ? SvRV(sv) : sv;
    if (isGV_with_GP(target)) {
        out->gv = (GV *)target;
        out->io = GvIO(out->gv);
        return true;
    }
    if (!SvROK(sv) || SvTYPE(target) != SVt_PVIO)
        return false;
    out->io = (IO *)target;
    return true;
}

/* The open stream of a handle, or NULL. */
PerlIO *
handle_stream(const Handle &handle)
{
    return handle.io ? IoIFP(handle.io) : NULL;
}

/* What keeps a resolved handle alive for as long as it is used: its glob,
 * or its IO where the glob is a scalar holding one (a "fake" glob), which
 * may be assigned something else meanwhile; the handle then goes by the IO
 * alone. NULL for a glob without IO. */
SV *
handle_owner(Handle *handle)
{
    if (handle->gv && SvFAKE(handle->gv))
        handle->gv = NULL;
    return handle->gv ? (SV *)handle->gv : (SV *)handle->io;
}

/* The descriptor a resolved handle has now, -1 if none: a signal handler
 * run during a wait may have closed or reopened it since. The caller keeps
 * the glob or IO alive. */
int
handle_fd_now(pTHX_ const Handle &handle)
{
    IO *const io = handle.gv ? GvIO(handle.gv) : handle.io;
    PerlIO *const fp = io ? IoIFP(io) : NULL;
    return fp ? PerlIO_fileno(fp) : -1;
}

/* The descriptor of a handle SV (as as_handle reads it) and its stream:
 * -1 when it has no open descriptor. */
int
handle_fd(pTHX_ SV *sv, PerlIO **fpp)
{
    Handle handle;
    *fpp = as_handle(sv, &handle) ? handle_stream(handle) : NULL;
    return *fpp ? PerlIO_fileno(*fpp) : -1;
}

/* A new handle on a duplicate of descriptor fd, made as
 * `open(my $NAME, MODE, $fd)` in this module made it before: a glob of
 * that name, outside any stash's symbol table, and none of the caller's
 * `use open` layers (PerlIO reads those from the running statement, so the
 * open runs under a copy of it without them). NULL with errno set. */
SV *
dup_handle(pTHX_ int fd, const char *mode, const char *name, HV *stash)
{
    GV *const gv = (GV *)newSV_type(SVt_NULL);
    gv_init_pvn(gv, stash, name, strlen(name), 0);
    SV *const handle = newRV_noinc((SV *)gv);
    SV *fd_sv = sv_2mortal(newSViv(fd));
    COP plain = *PL_curcop;
    plain.cop_hints &= ~(HINT_LEXICAL_IO_IN | HINT_LEXICAL_IO_OUT);
    ENTER;
    SAVEVPTR(PL_curcop);
    PL_curcop = &plain;
    const bool opened = do_openn(gv, mode, (I32)strlen(mode), FALSE, 0, 0, NULL, &fd_sv, 1);
    LEAVE;
    if (opened)
        return handle;
    dSAVE_ERRNO;
    SvREFCNT_dec(handle);
    RESTORE_ERRNO;
    return NULL;
}

/* ---- flock's arguments, read as core reads them ------------------------ */

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
    Handle handle;
    SV *name = NULL; /* names a handle that has no glob, for warnings */
    int fd = -1;     /* set for a descriptor number */
};

/* Resolves flock's first argument the way CORE::flock does (glob, glob ref,
 * IO object, an object overloading *{}, or a handle name in the caller's
 * package), plus a descriptor number. Croaks where core's rv2gv croaks;
 * warns nothing (flock_call does, after the operation is read, in core's
 * order). */
FlockTarget
flock_target(pTHX_ SV *arg)
{
    FlockTarget target;
    SvGETMAGIC(arg);
    if (SvROK(arg) && SvAMAGIC(arg)) /* *{} overloading, as rv2gv calls it */
        arg = amagic_deref_call(arg, to_gv_amg);
    if (as_handle(arg, &target.handle)) {
        if (!target.handle.gv) /* an IO object: named as core names it */
            target.name = newSVpvs_flags("__ANONIO__", SVs_TEMP);
    }
    else if (SvROK(arg))
        Perl_croak(aTHX_ "Not a GLOB reference");
    else if (!SvOK(arg))
        Perl_croak(aTHX_ "Can't use an undefined value as a symbol reference");
    else if (!descriptor_number(aTHX_ arg, &target.fd)) {
        /* At run time an unqualified name resolves in CopSTASH(PL_curcop),
         * which for an XSUB is the calling statement's package. No glob:
         * unnamed, as in core. */
        target.handle.gv = gv_fetchsv_nomg(arg, 0, SVt_PVIO);
        target.handle.io = target.handle.gv ? GvIO(target.handle.gv) : NULL;
    }
    return target;
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

/* ---- the other functions' arguments ------------------------------------ */

/* A TIMEOUT in seconds, for flock and the timeout option: undef or absent
 * (NULL) waits without bound; false for a negative, NaN or non-numeric
 * value. Inline: flock's hot path. */
inline bool
parse_timeout(pTHX_ SV *sv, locker::Deadline *out)
{
    if (!sv || (SvGETMAGIC(sv), !SvOK(sv))) {
        *out = locker::Deadline::Never();
        return true;
    }
    const NV seconds = looks_like_number(sv) ? SvNV_nomg(sv) : -1;
    if (Perl_isnan(seconds) || seconds < 0)
        return false;
    *out = locker::Deadline::After((double)seconds);
    return true;
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

/* A byte range for lock_range / range_conflict (whole for lock_file). */
struct ByteRange {
    bool whole = true;
    locker::Pos start = 0;
    locker::Pos end = 0;
    off_t length = 0; /* as given (0: to end of file) */
};

/* OFFSET or LENGTH: a non-negative integer that fits in off_t; croaks. */
off_t
range_number(pTHX_ SV *sv, const char *func, const char *name)
{
    SvGETMAGIC(sv);
    if (!SvOK(sv) || !looks_like_number(sv))
        Perl_croak(aTHX_ "%s: %s must be a non-negative integer", func, name);
    UV digits;
    STRLEN len;
    const char *pv;
    bool too_large;
    if (!SvIOK(sv) && SvPOK(sv) && (pv = SvPV_nomg_const(sv, len)) &&
        grok_number(pv, len, &digits) == IS_NUMBER_IN_UV) { /* exact decimal string */
        too_large = digits > (UV)IV_MAX;
    }
    else if (SvIOK(sv)) { /* exact: NVs lose precision above 2**53 */
        if (!SvIsUV(sv) && SvIVX(sv) < 0)
            Perl_croak(aTHX_ "%s: %s must be a non-negative integer", func, name);
        digits = SvUVX(sv);
        too_large = SvIsUV(sv) && digits > (UV)IV_MAX;
    }
    else {
        const NV value = SvNV_nomg(sv);
        if (Perl_isnan(value) || value < 0 || value != floor(value))
            Perl_croak(aTHX_ "%s: %s must be a non-negative integer", func, name);
        too_large = value >= 9223372036854775808.0; /* 2**63: beyond off_t */
        digits = too_large ? 0 : (UV)value;
    }
    if (too_large)
        Perl_croak(aTHX_ "%s: %s is too large for this platform's off_t", func, name);
    return (off_t)digits;
}

/* OFFSET and LENGTH as a ByteRange; croaks. */
ByteRange
range_arguments(pTHX_ SV *offset, SV *length, const char *func)
{
    ByteRange range;
    range.whole = false;
    const off_t start = range_number(aTHX_ offset, func, "OFFSET");
    range.length = range_number(aTHX_ length, func, "LENGTH");
    if (!locker::RangeEnd(start, range.length, &range.end).ok())
        Perl_croak(aTHX_ "%s: OFFSET + LENGTH is too large for this platform's off_t", func);
    range.start = (locker::Pos)start;
    return range;
}

/* PATH | FH of lock_file, lock_range, range_conflict and lock_holders, read
 * once (a tied PATH is fetched once). */
struct LockTarget {
    bool by_handle = false;
    Handle handle;     /* the handle, as resolved once */
    SV *owner = NULL;  /* its glob or IO (handle_owner) */
    SV *keep = NULL;   /* a mortal reference to owner, made before Perl code
                        * runs (hold_target): owner then outlives it */
    PerlIO *fp = NULL; /* the handle's stream, if open */
    int fd = -1;       /* its descriptor: -1 when not open */
    SV *path = NULL;   /* a mortal copy of PATH, which handlers cannot change */
};


/* Reads PATH | FH: a handle, or a defined, non-empty PATH without NUL bytes
 * (croaks otherwise). */
LockTarget
lock_target(pTHX_ SV *arg, const char *func)
{
    LockTarget target;
    SvGETMAGIC(arg); /* once: a tied or magical argument is fetched once */
    if (as_handle(arg, &target.handle)) {
        target.by_handle = true;
        target.owner = handle_owner(&target.handle);
        target.fp = handle_stream(target.handle);
        target.fd = target.fp ? PerlIO_fileno(target.fp) : -1;
        return target;
    }
    if (!SvOK(arg))
        Perl_croak(aTHX_ "%s: PATH or FH is undefined", func);
    if (SvROK(arg)) {
        /* An object that says what it is as a string (a path object), as
         * core's open takes it. */
        SV *const str = SvAMAGIC(arg) ? AMG_CALLunary(arg, string_amg) : NULL;
        if (!str || SvROK(str))
            Perl_croak(aTHX_ "%s: PATH or FH expected, not a %s reference", func,
                       sv_reftype(SvRV(arg), 0));
        arg = str;
    }
    STRLEN len;
    const char *pv = SvPV_nomg_const(arg, len);
    if (len == 0)
        Perl_croak(aTHX_ "%s: PATH is empty", func);
    if (memchr(pv, 0, len))
        Perl_croak(aTHX_ "%s: PATH contains a NUL byte", func);
    target.path = newSVpvn_flags(pv, len, SVs_TEMP | SvUTF8(arg));
    return target;
}

/* PATH as the engine takes it. */
std::string
path_of(const LockTarget &target)
{
    return std::string(SvPVX_const(target.path), SvCUR(target.path));
}

/* The options each function takes. */
enum : unsigned {
    kTimeoutOption = 1,  /* timeout => SECONDS */
    kCoherentOption = 2, /* coherent => BOOL */
    kPathOptions = 4,    /* create, perms, follow_symlinks, unlink */
    kWaitersOption = 8,  /* waiters => BOOL (lock_holders) */
    kLockOptions = kTimeoutOption | kCoherentOption | kPathOptions,
};

struct Options {
    locker::Deadline deadline = locker::Deadline::Never();
    locker::PathOptions path;
    bool path_only_given = false;
    bool coherent = false;
    bool waiters = false;
};

/* Reads one of the PATH-only options into *out; false for another name. */
bool
path_option(pTHX_ const char *key, STRLEN len, SV *value, const char *func,
            locker::PathOptions *out)
{
    if (memEQs(key, len, "create"))
        out->create = SvTRUE(value);
    else if (memEQs(key, len, "follow_symlinks"))
        out->follow_symlinks = SvTRUE(value);
    else if (memEQs(key, len, "unlink"))
        out->unlink = SvTRUE(value);
    else if (memEQs(key, len, "perms")) {
        SvGETMAGIC(value);
        const NV perms = looks_like_number(value) ? SvNV_nomg(value) : -1;
        if (!(perms >= 0 && perms <= 07777) || perms != floor(perms))
            Perl_croak(aTHX_ "%s: perms must be a file mode such as 0666", func);
        out->perms = (mode_t)perms;
    }
    else
        return false;
    return true;
}

/* Reads the `count` option arguments at args, of the kinds `allowed`.
 * Names are compared in place: nothing here has a destructor, so a croak
 * (a long unknown name included) leaks nothing. */
Options
parse_options(pTHX_ SV **args, I32 count, const char *func, unsigned allowed)
{
    Options options;
    if (count % 2)
        Perl_croak(aTHX_ "%s: odd number of option arguments", func);
    for (I32 i = 0; i < count; i += 2) {
        STRLEN len;
        const char *key = SvPV_const(args[i], len);
        SV *const value = args[i + 1];
        if ((allowed & kTimeoutOption) && memEQs(key, len, "timeout")) {
            if (!parse_timeout(aTHX_ value, &options.deadline))
                Perl_croak(aTHX_ "%s: timeout must be a non-negative number of seconds", func);
        }
        else if ((allowed & kCoherentOption) && memEQs(key, len, "coherent"))
            options.coherent = SvTRUE(value);
        else if ((allowed & kWaitersOption) && memEQs(key, len, "waiters"))
            options.waiters = SvTRUE(value);
        else if ((allowed & kPathOptions) && path_option(aTHX_ key, len, value, func, &options.path))
            options.path_only_given = true;
        else
            Perl_croak(aTHX_ "%s: unknown option '%" SVf "'", func, SVfARG(args[i]));
    }
    return options;
}

/* Croaks if PATH-only options came with a handle. */
void
check_path_options(pTHX_ const LockTarget &target, const Options &options, const char *func)
{
    if (target.by_handle && options.path_only_given)
        Perl_croak(aTHX_ "%s: create, perms, follow_symlinks and unlink apply to a PATH only", func);
}

/* ---- calling the engine ------------------------------------------------- */

/* Calls call() -> Status, setting errno from a failure. After an EINTR it
 * runs Perl's pending signal handlers, which may die (so call() must leave
 * nothing with a destructor alive when it returns), then calls again if
 * resume, else answers EINTR. */
template <typename Call>
locker::Status
until_not_interrupted(pTHX_ bool resume, Call &&call)
{
    for (;;) {
        const locker::Status status = call();
        if (status.ok())
            return status;
        errno = status.err();
        if (status.err() != EINTR)
            return status;
        PERL_ASYNC_CHECK();
        errno = EINTR; /* a handler may have changed it */
        if (!resume)
            return status;
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
     * read (warns), then a handle without a stream reported (warns). A
     * stream without a descriptor (in-memory, tied) gives fd -1, which core
     * hands to flock(2) as well: the kernel checks the operation first
     * (EINVAL), then the descriptor. */
    const FlockTarget target = flock_target(aTHX_ fh);
    const int op = flock_operation(aTHX_ operation);
    int fd = target.fd;
    PerlIO *const fp = fd < 0 ? handle_stream(target.handle) : NULL;
    if (fd < 0 && !fp) {
        report_evil_fh(aTHX_ target.handle.gv, target.handle.io, target.name);
        errno = EBADF;
        return 0;
    }
    locker::Deadline deadline = locker::Deadline::Never();
    if (!parse_timeout(aTHX_ timeout, &deadline)) {
        errno = EINVAL;
        return 0;
    }
    if (fp) {
        fd = PerlIO_fileno(fp);
        if (!nothing_buffered(fp))
            (void)PerlIO_flush(fp);
    }
    /* As in core, handlers run and an untimed wait ends with EINTR; a
     * timed wait goes on with the time left, on the descriptor the handle
     * has then (a handler may have closed or reopened it), which the
     * handle, kept alive meanwhile, is asked for again. */
    const bool resumes = !deadline.is_never();
    Handle resolved; /* set, and kept alive, once handlers are to run */
    return until_not_interrupted(aTHX_ resumes, [&] {
               if (resolved.gv || resolved.io)
                   fd = handle_fd_now(aTHX_ resolved);
               const locker::Status status = locker::Flock(fd, op, deadline);
               if (status.err() == EINTR && resumes && fp && !resolved.gv && !resolved.io) {
                   resolved = target.handle;
                   sv_2mortal(SvREFCNT_inc_simple_NN(handle_owner(&resolved)));
               }
               return status;
           }).ok();
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

/* ---- objects owned through magic --------------------------------------- */

/* A guard or waiter belongs to its object's referent through ext magic
 * (never through the object's value, so no copy of it can own anything);
 * mg_obj and the C++ object's `self` both name that referent, so a copy's
 * magic (Storable, a cloner that copies magic) is told apart untouched. */
template <typename Object>
Object *
object_lookup(pTHX_ SV *self, const MGVTBL *vtbl)
{
    if (!SvROK(self))
        return NULL;
    SV *const referent = SvRV(self);
    if (!SvOBJECT(referent) || SvTYPE(referent) < SVt_PVMG)
        return NULL;
    MAGIC *const mg = mg_findext(referent, PERL_MAGIC_ext, vtbl);
    if (!mg || mg->mg_obj != referent || !mg->mg_ptr)
        return NULL;
    Object *const object = (Object *)mg->mg_ptr;
    return object->self == referent ? object : NULL;
}

/* The same for a method's invocant (the typemap's INPUT), croaking with
 * the method, as called, and its class named. */
template <typename Object>
Object *
invocant(pTHX_ SV *self, const MGVTBL *vtbl, CV *method, const char *cls)
{
    Object *const object = object_lookup<Object>(aTHX_ self, vtbl);
    if (!object)
        Perl_croak(aTHX_ "%s::%s: invocant is not a %s object", cls, GvNAME(CvGV(method)), cls);
    return object;
}

/* Makes a mortal object of class stash owning `object` (a heap pointer,
 * from then on freed by vtbl's free hook). */
template <typename Object>
SV *
new_object(pTHX_ Object *object, const MGVTBL *vtbl, HV *stash)
{
    SV *const referent = newSV_type(SVt_PVMG);
    object->self = referent;
    (void)sv_magicext(referent, referent, PERL_MAGIC_ext, vtbl, (const char *)object, 0);
    return sv_bless(sv_2mortal(newRV_noinc(referent)), stash);
}

/* Makes the handle of target outlive the statement, before Perl code that
 * could drop it runs: a layer's flush, or signal handlers during a wait. */
void
hold_target(pTHX_ LockTarget *target)
{
    if (target->owner && !target->keep)
        target->keep = sv_2mortal(newRV_inc(target->owner));
}

/* Flushes target's handle before it is locked, if anything is buffered. */
void
flush_target(pTHX_ LockTarget *target)
{
    if (nothing_buffered(target->fp))
        return;
    hold_target(aTHX_ target);
    (void)PerlIO_flush(target->fp);
}

/* What a guard or waiter remembers of the call that made it. */
struct Origin {
    PerlInterpreter *owner = nullptr; /* the interpreter (ithread) that asked */
    SV *self = nullptr;               /* the referent the magic is attached to */
    SV *handle = nullptr;             /* counted: user's handle, or fh()'s dup */
    bool borrowed = false;            /* locked through the user's handle */
    bool path_utf8 = false;           /* PATH was a character string */
    IV offset = 0, length = 0;        /* as given, for a range */

    Origin() = default;
    Origin(pTHX_ const LockTarget &target, const ByteRange &range)
        : owner(aTHX),
          handle(target.keep ? SvREFCNT_inc_simple_NN(target.keep)
                 : target.owner ? newRV_inc(target.owner)
                                : nullptr),
          borrowed(target.by_handle), path_utf8(target.path && SvUTF8(target.path)),
          offset((IV)range.start), length((IV)range.length)
    {
    }
};

/* ---- guards ------------------------------------------------------------ */

/* A File::Locker::Guard object's lock. */
struct Guard final : Origin {
    locker::Lock lock;
    Guard *prev = nullptr, *next = nullptr; /* MY_CXT.live_guards */
};

int guard_free(pTHX_ SV *sv, MAGIC *mg);

/* get, set, len, clear, free, copy, dup, local. No dup: a new ithread gets
 * no guard (CLONE_SKIP). */
const MGVTBL guard_vtbl = {NULL, NULL, NULL, NULL, guard_free, NULL, NULL, NULL};

/* True in the process and interpreter (ithread) that took the lock. */
bool
guard_is_ours(pTHX_ const Guard *guard)
{
    return guard->owner == aTHX && guard->lock.InOwnerProcess();
}

/* The stream of the guard's Perl handle when it holds something to flush,
 * else NULL. */
PerlIO *
buffered_stream(pTHX_ Guard *guard)
{
    PerlIO *fp;
    if (!guard->handle || handle_fd(aTHX_ guard->handle, &fp) < 0 || nothing_buffered(fp))
        return NULL;
    return fp;
}

/* Flushes the guard's Perl handle, so the next holder sees what was
 * printed under the lock. */
void
guard_flush(pTHX_ Guard *guard)
{
    if (PerlIO *const fp = buffered_stream(aTHX_ guard))
        (void)PerlIO_flush(fp);
}

/* Unlocks (owner) or lets go of this process's copy (a forked child),
 * without flushing. */
void
guard_unlock(pTHX_ Guard *guard)
{
    if (guard->lock.released())
        return;
    if (guard->owner != aTHX && guard->lock.InOwnerProcess())
        return; /* another ithread's: never ours to touch */
    guard->lock.Release();
}

/* Flushes the handle (owner), then unlocks as guard_unlock does. */
void
guard_release(pTHX_ Guard *guard)
{
    if (!guard->lock.released() && guard_is_ours(aTHX_ guard))
        guard_flush(aTHX_ guard);
    guard_unlock(aTHX_ guard);
}

/* The end of a guard being freed, once guard_free has flushed its handle
 * (or the flush died): unlocks as guard_release does, without flushing,
 * frees the Guard, and keeps a handle fh() made while closing it would drop
 * this process's classic locks on the file. */
void
guard_end(pTHX_ void *p)
{
    std::unique_ptr<Guard> guard(static_cast<Guard *>(p));
    SV *const handle = guard->handle;
    SV *const made = guard->borrowed ? NULL : handle;
    /* A handle fh() made shares the lock's description: while the caller
     * still has it, the description must never serve as a fresh one, nor
     * the handle be handed to another guard (fd -1 below). */
    const bool theirs = made && SvREFCNT(SvRV(made)) > 1;
    if (theirs && guard_is_ours(aTHX_ guard.get()))
        guard->lock.MarkShared();
    const locker::InodeKey file = locker::FileToWatch(guard->lock);
    guard_unlock(aTHX_ guard.get());
    guard.reset();
    PerlIO *fp;
    const int fd = theirs || !made ? -1 : handle_fd(aTHX_ made, &fp);
    if (!made || !locker::KeepIfLocked(aTHX, made, fd, file))
        SvREFCNT_dec(handle);
    while (SV *const closable = (SV *)locker::TakeClosable(aTHX))
        SvREFCNT_dec(closable);
}


/* Prologue of the methods that change the lock. */
void
guard_check_change(pTHX_ Guard *guard, const char *method)
{
    if (!guard_is_ours(aTHX_ guard))
        Perl_croak(aTHX_ "%s::%s: the lock belongs to another process or thread",
                   kGuardClass, method);
    if (guard->lock.released())
        Perl_croak(aTHX_ "%s::%s: the guard was released", kGuardClass, method);
    guard_flush(aTHX_ guard);
}

/* Frees a guard's object: releases the lock as guard_release does. A
 * handle fh() made goes with it, unless the engine keeps it because its
 * close would drop this process's classic locks on the file. */
int
guard_free(pTHX_ SV *sv, MAGIC *mg)
{
    if (mg->mg_obj != sv || !mg->mg_ptr)
        return 0; /* a copy's magic, or freed already: owns nothing */
    Guard *const guard = (Guard *)mg->mg_ptr;
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
    PerlIO *const fp = !guard->lock.released() && guard_is_ours(aTHX_ guard)
                           ? buffered_stream(aTHX_ guard)
                           : NULL;
    if (!fp) {
        guard_end(aTHX_ guard);
        return 0;
    }
    /* The flush runs Perl's I/O layers, which may die: the rest runs from
     * the save stack, so the lock is let go of and the guard freed even
     * then. */
    ENTER;
    SAVEDESTRUCTOR_X(guard_end, guard);
    (void)PerlIO_flush(fp);
    LEAVE;
    return 0;
}

/* Wraps a granted guard in a new mortal File::Locker::Guard object. */
SV *
new_guard_object(pTHX_ Guard *guard)
{
    dMY_CXT;
    guard->next = MY_CXT.live_guards;
    if (guard->next)
        guard->next->prev = guard;
    MY_CXT.live_guards = guard;
    return new_object(aTHX_ guard, &guard_vtbl, MY_CXT.guard_stash);
}

/* One try of take_lock's: through the caller's descriptor, or PATH. */
locker::Status
acquire(pTHX_ locker::Lock *lock, const LockTarget &target, int mode, const ByteRange &range,
        const Options &options)
{
    const locker::Deadline &deadline = options.deadline;
    if (target.by_handle) {
        const int fd = handle_fd_now(aTHX_ target.handle);
        return range.whole ? lock->AcquireDescriptor(fd, mode, deadline)
                           : lock->AcquireDescriptor(fd, mode, range.start, range.end, deadline);
    }
    const std::string path = path_of(target);
    return range.whole ? lock->AcquirePath(path, mode, options.path, deadline)
                       : lock->AcquirePath(path, mode, range.start, range.end, options.path,
                                           deadline);
}

/* Takes the lock of lock_file (range.whole) or lock_range. The wait goes
 * on through Perl's signal handlers until the lock or the deadline, unless
 * one dies. A mortal guard, or NULL with errno set. */
SV *
take_lock(pTHX_ LockTarget &target, int mode, const ByteRange &range,
          const Options &options)
{
    if (target.by_handle) {
        if (target.fd < 0) {
            errno = EBADF;
            return NULL;
        }
        flush_target(aTHX_ &target);
    }
    Guard *granted = NULL;
    const locker::Status status = until_not_interrupted(aTHX_ true, [&] {
        auto guard = std::make_unique<Guard>();
        guard->lock.set_coherent(options.coherent);
        const locker::Status taken = acquire(aTHX_ &guard->lock, target, mode, range, options);
        if (taken.ok())
            granted = guard.release();
        else if (taken.err() == EINTR)
            hold_target(aTHX_ &target); /* handlers run next */
        return taken;
    });
    if (!status.ok())
        return NULL;
    static_cast<Origin &>(*granted) = Origin(aTHX_ target, range);
    return new_guard_object(aTHX_ granted);
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

/* ---- waiters (lock_file_async, lock_range_async) ---------------------- */

/* A File::Locker::Waiter object's wait. */
struct AsyncWait final : Origin {
    std::unique_ptr<locker::Waiter> waiter;
    SV *fh = nullptr; /* counted: the handle fh() made */
};

int waiter_free(pTHX_ SV *sv, MAGIC *mg);

const MGVTBL waiter_vtbl = {NULL, NULL, NULL, NULL, waiter_free, NULL, NULL, NULL};

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

/* Starts an asynchronous lock_file (range.whole) or lock_range. A mortal
 * waiter, or NULL with errno set. */
SV *
start_wait(pTHX_ LockTarget &target, int mode, const ByteRange &range,
           const Options &options)
{
    if (target.by_handle) {
        if (target.fd < 0) {
            errno = EBADF;
            return NULL;
        }
        flush_target(aTHX_ &target);
    }
    AsyncWait *started = NULL;
    {
        locker::WaitRequest request;
        request.whole = range.whole;
        request.fd = target.fd;
        if (!target.by_handle) {
            request.path = path_of(target);
            request.options = options.path;
        }
        request.mode = mode;
        request.start = range.start;
        request.end = range.whole ? locker::kRangeEnd : range.end;
        request.deadline = options.deadline;
        request.coherent = options.coherent;
        auto wait = std::make_unique<AsyncWait>();
        const locker::Status status = locker::Waiter::Start(request, &wait->waiter);
        errno = status.err();
        if (status.ok())
            started = wait.release();
    }
    if (!started)
        return NULL;
    static_cast<Origin &>(*started) = Origin(aTHX_ target, range);
    dMY_CXT;
    return new_object(aTHX_ started, &waiter_vtbl, MY_CXT.waiter_stash);
}

/* The guard of an ended wait, once: a mortal guard, or NULL with errno. */
SV *
waiter_guard(pTHX_ AsyncWait *wait)
{
    if (!waiter_is_ours(aTHX_ wait)) {
        errno = EPERM;
        return NULL;
    }
    Guard *granted = NULL;
    {
        auto guard = std::make_unique<Guard>();
        const locker::Status status = wait->waiter->Finish(&guard->lock);
        errno = status.err();
        if (status.ok())
            granted = guard.release();
    }
    if (!granted)
        return NULL;
    static_cast<Origin &>(*granted) = *wait;
    wait->handle = NULL; /* the reference moved to the guard */
    return new_guard_object(aTHX_ granted);
}

/* Sets up this interpreter's state (at boot, and in a new ithread). */
void
init_cxt(pTHX_ my_cxt_t *cxt)
{
    cxt->guard_stash = gv_stashpvs("File::Locker::Guard", GV_ADD);
    cxt->waiter_stash = gv_stashpvs("File::Locker::Waiter", GV_ADD);
    cxt->live_guards = NULL; /* a new ithread has no guards (CLONE_SKIP) */
    perl_atexit(release_leftover_guards, NULL);
}

}  // namespace

MODULE = File::Locker    PACKAGE = File::Locker

PROTOTYPES: DISABLE

BOOT:
{
    MY_CXT_INIT;
    init_cxt(aTHX_ &MY_CXT);
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
    init_cxt(aTHX_ &MY_CXT);
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
    const Options options = parse_options(aTHX_ &ST(2), items - 2, func, kLockOptions);
    LockTarget where = lock_target(aTHX_ target, func);
    check_path_options(aTHX_ where, options, func);
    SV *const result = ix ? start_wait(aTHX_ where, lock, ByteRange(), options)
                          : take_lock(aTHX_ where, lock, ByteRange(), options);
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
    const Options options = parse_options(aTHX_ &ST(4), items - 4, func, kLockOptions);
    LockTarget where = lock_target(aTHX_ target, func);
    check_path_options(aTHX_ where, options, func);
    SV *const result = ix ? start_wait(aTHX_ where, lock, range, options)
                          : take_lock(aTHX_ where, lock, range, options);
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
    const LockTarget where = lock_target(aTHX_ target, "range_conflict");
    locker::Conflict conflict;
    if (!where.by_handle)
        errno = locker::FindConflictAt(path_of(where), want, range.start, range.end, &conflict).err();
    else if (where.fd < 0)
        errno = EBADF;
    else
        errno = locker::FindConflict(where.fd, want, range.start, range.end, &conflict).err();
    if (errno || !conflict.found) /* errno 0: the answer is "free" */
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
    const Options options = parse_options(aTHX_ &ST(1), items - 1, "lock_holders", kWaitersOption);
    const LockTarget where = lock_target(aTHX_ target, "lock_holders");
    /* The list outlives the engine calls: it is filled, then moved into
     * Perl values by code that cannot croak. */
    std::vector<locker::Holder> holders;
    {
        struct stat st;
        const std::string path = where.by_handle ? std::string() : path_of(where);
        int err = 0;
        if (where.by_handle ? where.fd < 0 || fstat(where.fd, &st) != 0
                            : stat(path.c_str(), &st) != 0)
            err = where.by_handle && where.fd < 0 ? EBADF : errno;
        if (!err)
            err = locker::ListHolders(st.st_dev, st.st_ino, &holders).err();
        if (!err && options.waiters)
            err = locker::ListWaiters(st.st_dev, st.st_ino, &holders).err();
        if (!err) /* network and FUSE filesystems: ask the filesystem too */
            err = locker::AddProbedHolders(where.fd, path, &holders).err();
        errno = err; /* 0 on success, so an empty list is told apart from a failure */
    }
    if (errno)
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
release(guard)
    Guard *guard
  PPCODE:
    guard_release(aTHX_ guard);
    XSRETURN_YES;

void
is_locked(guard)
    Guard *guard
  PPCODE:
    /* What the kernel holds, not what the guard remembers. */
    const bool held = guard->lock.held() && guard->lock.KernelHolds();
    ST(0) = boolSV(held && guard_is_ours(aTHX_ guard));
    XSRETURN(1);

void
mode(guard)
    Guard *guard
  PPCODE:
    XSRETURN_IV(guard->lock.mode());

void
path(guard)
    Guard *guard
  PPCODE:
    if (guard->borrowed)
        XSRETURN_UNDEF;
    const std::string &path = guard->lock.path();
    ST(0) = sv_2mortal(newSVpvn(path.data(), path.size()));
    if (guard->path_utf8)
        SvUTF8_on(ST(0));
    XSRETURN(1);

void
offset(guard)
    Guard *guard
  ALIAS:
    length = 1
  PPCODE:
    if (guard->lock.whole())
        XSRETURN_UNDEF; /* whole-file lock */
    XSRETURN_IV(ix == 0 ? guard->offset : guard->length);

void
upgrade(guard, ...)
    Guard *guard
  PPCODE:
    const char *const func = "File::Locker::Guard::upgrade";
    const bool nb = (items - 1) % 2; /* upgrade(LOCK_NB, ...) */
    if (nb && SvNV(ST(1)) != LOCK_NB) /* exactly: 4.5 is no flag */
        Perl_croak(aTHX_ "%s: the only flag allowed is LOCK_NB", func);
    const Options options = parse_options(aTHX_ &ST(1 + nb), items - 1 - nb, func, kTimeoutOption);
    guard_check_change(aTHX_ guard, "upgrade");
    /* Handlers run during the wait may drop the last reference to the
     * guard: it lives until the statement ends. */
    sv_2mortal(SvREFCNT_inc_simple_NN(SvRV(ST(0))));
    /* LOCK_NB wins over a timeout, which is still checked. */
    const locker::Deadline deadline = nb ? locker::Deadline::Now() : options.deadline;
    ST(0) = boolSV(until_not_interrupted(aTHX_ true, [&] {
                       return guard->lock.Upgrade(deadline);
                   }).ok());
    XSRETURN(1);

void
downgrade(guard)
    Guard *guard
  PPCODE:
    guard_check_change(aTHX_ guard, "downgrade");
    sv_2mortal(SvREFCNT_inc_simple_NN(SvRV(ST(0)))); /* as in upgrade */
    ST(0) = boolSV(until_not_interrupted(aTHX_ true, [&] {
                       return guard->lock.Downgrade();
                   }).ok());
    XSRETURN(1);

void
fh(guard)
    Guard *guard
  PPCODE:
    /* A guard on a PATH makes its handle on first use: a kept one of the
     * same description, or a new duplicate of the locked descriptor. */
    if (!guard->handle && !guard->lock.released()) {
        guard->handle = (SV *)locker::TakeKept(aTHX, guard->lock.fd());
        if (!guard->handle) {
            dMY_CXT;
            guard->handle = dup_handle(aTHX_ guard->lock.fd(), guard->lock.writable() ? "+<&" : "<&",
                                       "$dup", MY_CXT.guard_stash);
        }
    }
    if (!guard->handle)
        XSRETURN_EMPTY;
    ST(0) = sv_2mortal(newSVsv(guard->handle));
    XSRETURN(1);

void
_leave_locked(guard)
    Guard *guard
  PPCODE:
    /* Lets go without unlocking (the locker command's exit, as flock(1)'s):
     * the kernel keeps the lock while another descriptor of it is open. */
    guard_check_change(aTHX_ guard, "_leave_locked");
    guard->lock.Abandon();
    XSRETURN_EMPTY;


MODULE = File::Locker    PACKAGE = File::Locker::Waiter

void
is_ready(wait)
    AsyncWait *wait
  PPCODE:
    ST(0) = boolSV(waiter_is_ours(aTHX_ wait) && wait->waiter->Ended());
    XSRETURN(1);

void
guard(wait)
    AsyncWait *wait
  PPCODE:
    SV *const guard = waiter_guard(aTHX_ wait);
    ST(0) = guard ? guard : &PL_sv_undef;
    XSRETURN(1);

void
cancel(wait)
    AsyncWait *wait
  PPCODE:
    if (waiter_is_ours(aTHX_ wait))
        wait->waiter->Cancel();
    XSRETURN_YES;

void
fh(wait)
    AsyncWait *wait
  PPCODE:
    /* A read handle that becomes readable when the wait ends: a duplicate
     * of the engine's descriptor, made on first use. */
    if (!wait->fh) {
        dMY_CXT;
        wait->fh = dup_handle(aTHX_ wait->waiter->fd(), "<&", "$fh", MY_CXT.waiter_stash);
    }
    if (!wait->fh)
        XSRETURN_EMPTY;
    ST(0) = sv_2mortal(newSVsv(wait->fh));
    XSRETURN(1);

void
_threaded(wait)
    AsyncWait *wait
  PPCODE:
    ST(0) = boolSV(wait->waiter->threaded());
    XSRETURN(1);

void
DESTROY(self)
    SV *self
  PPCODE:
    /* Ends the wait at once, as guards release at once. */
    if (object_lookup<AsyncWait>(aTHX_ self, &waiter_vtbl))
        (void)waiter_free(aTHX_ SvRV(self),
                          mg_findext(SvRV(self), PERL_MAGIC_ext, &waiter_vtbl));
    XSRETURN_EMPTY;
