// Descriptors a caller keeps open only because closing them would drop
// this process's classic POSIX locks.
//
// In the classic-lock fallback the close of any descriptor of a file drops
// every POSIX lock the process holds on it. A caller that made a descriptor
// of its own on a lock's open file description (a dup for I/O) therefore
// may not close it when that lock goes while other locks on the file live.
// These functions decide its fate instead: kept while the file holds
// classic locks, handed back to be closed once none are left, or handed
// back for reuse by a later lock on the same description, so that the
// number kept is bounded by the live locks on the file, never by the
// number of calls. With OFD locks nothing is ever kept.
//
// The caller names each kept descriptor by a token (whatever object owns
// it) and an owner (the context it belongs to; a token is only ever handed
// back to its owner). Each thread has a table of its own, so no call needs
// a lock; a forked child inherits the forking thread's.
#ifndef FILE_LOCKER_SRC_KEPT_FILES_H_
#define FILE_LOCKER_SRC_KEPT_FILES_H_

#include "lock.h"

namespace locker {

using KeptToken = void*;

// The file `lock` holds, to be read before it is released and given to
// KeepIfLocked after: empty with OFD locks, where no close drops another
// lock. Never blocks.
InodeKey FileToWatch(const Lock& lock);

// Called once the lock is released: keeps the caller's descriptor `fd`
// of `file` (known by token) if closing it now would drop this process's
// classic locks on the file, and says whether it did; false means close it
// now. fd -1 keeps it without ever handing it back through TakeKept (its
// owner may still close or reopen it). Never blocks.
bool KeepIfLocked(const void* owner, KeptToken token, int fd, const InodeKey& file);

// The token of a kept descriptor of owner's that shares `fd`'s open file
// description, forgotten here (the caller owns it again), or nullptr.
KeptToken TakeKept(const void* owner, int fd);

// The token of one kept descriptor of owner's whose file holds no classic
// locks any more, forgotten here for the caller to close, or nullptr. Call
// until nullptr.
KeptToken TakeClosable(const void* owner);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_KEPT_FILES_H_
