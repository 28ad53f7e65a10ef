#include "kept_files.h"

#include <vector>

namespace locker {

namespace {

struct Kept {
  const void* owner;
  KeptToken token;
  int fd;  // -1: never handed back for reuse
  InodeKey file;
};

// This thread's kept descriptors (see the header for why per thread).
std::vector<Kept>& Table() {
  static thread_local std::vector<Kept> table;
  return table;
}

// Forgets owner's first entry that `match` accepts and gives its token.
template <typename Match>
KeptToken TakeFirst(const void* owner, Match&& match) {
  std::vector<Kept>& table = Table();
  for (Kept& kept : table) {
    if (kept.owner != owner || !match(kept)) continue;
    const KeptToken token = kept.token;
    kept = table.back();
    table.pop_back();
    return token;
  }
  return nullptr;
}

}  // namespace

InodeKey FileToWatch(const Lock& lock) {
  return UsingOfdLocks() ? InodeKey() : lock.inode();
}

bool KeepIfLocked(const void* owner, KeptToken token, int fd, const InodeKey& file) {
  if (!ClassicLocksHeld(file)) return false;
  Table().push_back(Kept{owner, token, fd, file});
  return true;
}

KeptToken TakeKept(const void* owner, int fd) {
  if (UsingOfdLocks()) return nullptr;
  return TakeFirst(owner, [fd](const Kept& kept) {
    return kept.fd >= 0 && SameOpenFile(kept.fd, fd);
  });
}

KeptToken TakeClosable(const void* owner) {
  if (UsingOfdLocks()) return nullptr;  // nothing was kept
  return TakeFirst(owner, [](const Kept& kept) { return !ClassicLocksHeld(kept.file); });
}

}  // namespace locker
