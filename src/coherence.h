// Data coherence under a lock, for filesystem clients that keep their page
// cache across lock hand-offs (FUSE clients such as GlusterFS and ceph-fuse
// do; the NFS client revalidates on lock and flushes on unlock by itself).
//
// Locks say who may touch the data; these calls make the touching agree
// between machines: the new holder reads what the previous one wrote, and
// the previous one's writes have left its machine before anyone else is let
// in. Stateless functions; safe to call from any thread.
#ifndef FILE_LOCKER_SRC_COHERENCE_H_
#define FILE_LOCKER_SRC_COHERENCE_H_

#include <sys/types.h>

#include "range_table.h"
#include "status.h"

namespace locker {

// Call right after a lock on [start, end) of fd is granted (end kRangeEnd,
// or start 0 and end 0 for the whole file). Asks the filesystem for the
// file's current attributes (statx with AT_STATX_FORCE_SYNC, so a size
// changed elsewhere is seen, which O_APPEND and reads at the end rely on),
// then drops this machine's clean cached pages of the range
// (POSIX_FADV_DONTNEED), so the next read goes to the server. Does not block
// on locks; costs a round trip to the server on network filesystems. Fails
// with the errno of statx or posix_fadvise; ESPIPE and EINVAL (pipes,
// sockets, directories: nothing cached to drop) count as success.
Status RefreshCachedData(int fd, Pos start, Pos end);

// Call right before the lock on fd is released: writes the file's dirty
// data to the server and waits for it (fdatasync), so the next holder,
// wherever it runs, can read it. Blocks for the write-back. EINVAL and
// EROFS (files that cannot be synced: nothing to flush) count as success;
// other errors (EIO, ENOSPC, EDQUOT) mean the data may not have arrived.
Status FlushDirtyData(int fd);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_COHERENCE_H_
