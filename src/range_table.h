// RangeTable: how many shared and exclusive holds cover each byte of a file.
//
// Stored as a map from segment start to the holds that apply up to the next
// key; bytes before the first key and after a zero segment have no holds.
// Add and Walk cost O(log n + k) for k segments touched, so thousands of live
// ranges stay cheap. Not synchronised: callers serialise access.
#ifndef FILE_LOCKER_SRC_RANGE_TABLE_H_
#define FILE_LOCKER_SRC_RANGE_TABLE_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>

namespace locker {

// Byte positions. Every off_t offset is a Pos, and so is the end just past
// the largest one: kRangeEnd = 2**63, the exclusive end of "to end of file
// and beyond" (the kernel's OFFSET_MAX is the last byte a lock can cover).
using Pos = std::uint64_t;
constexpr Pos kRangeEnd = Pos{1} << 63;

// Effective lock modes, ordered: kNone < kShared < kExclusive.
enum class RangeMode { kNone = 0, kShared = 1, kExclusive = 2 };

struct Holds {
  int shared = 0;
  int exclusive = 0;

  RangeMode mode() const {
    return exclusive > 0 ? RangeMode::kExclusive
                         : shared > 0 ? RangeMode::kShared : RangeMode::kNone;
  }
  void Add(RangeMode m, int delta) {
    (m == RangeMode::kExclusive ? exclusive : shared) += delta;
  }
  bool operator==(const Holds& o) const {
    return shared == o.shared && exclusive == o.exclusive;
  }
  bool operator!=(const Holds& o) const { return !(*this == o); }
};

class RangeTable final {
 public:
  // Adds delta (+1 or -1) holds of mode (kShared or kExclusive) on
  // [start, end). Requires start < end.
  void Add(Pos start, Pos end, RangeMode mode, int delta);

  // Calls fn(from, to, holds) for consecutive pieces covering [start, end)
  // exactly, each with the holds that apply there (zero where none).
  template <typename Fn>
  void Walk(Pos start, Pos end, Fn&& fn) const {
    if (solo_) {
      const Pos lo = start > solo_.start ? start : solo_.start;
      const Pos hi = end < solo_.end ? end : solo_.end;
      if (lo >= hi) {
        fn(start, end, Holds());
        return;
      }
      if (start < lo) fn(start, lo, Holds());
      fn(lo, hi, solo_.holds);
      if (hi < end) fn(hi, end, Holds());
      return;
    }
    auto it = bounds_.upper_bound(start);
    Holds current;
    if (it != bounds_.begin()) current = std::prev(it)->second;
    Pos from = start;
    while (from < end) {
      const Pos to = (it == bounds_.end() || it->first > end) ? end : it->first;
      if (to > from) fn(from, to, current);
      if (it == bounds_.end() || it->first >= end) break;
      current = it->second;
      from = it->first;
      ++it;
    }
  }

  // The holds at one byte.
  Holds At(Pos offset) const;

  bool empty() const { return !solo_ && bounds_.empty(); }
  size_t segments() const {
    if (solo_) return solo_.end == kRangeEnd ? 1 : 2;
    return bounds_.size();
  }

 private:
  // A table holding one range only (the common case: one lock on an open
  // file description) keeps it here, with bounds_ empty, so taking and
  // giving back an isolated lock touches no map node.
  struct Solo {
    Pos start = 0;
    Pos end = 0;
    Holds holds;
    explicit operator bool() const { return end != 0; }
  };

  void Split(Pos at);
  void Coalesce(Pos at);
  void Spill();

  Solo solo_;
  std::map<Pos, Holds> bounds_;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_RANGE_TABLE_H_
