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
#include <limits>
#include <map>

namespace locker {

// Byte offsets; kRangeEnd stands for "to end of file and beyond".
constexpr off_t kRangeEnd = std::numeric_limits<off_t>::max();

// Effective lock modes, ordered: kNone < kShared < kExclusive.
enum class RangeMode { kNone = 0, kShared = 1, kExclusive = 2 };

struct Holds {
  int shared = 0;
  int exclusive = 0;

  RangeMode mode() const {
    return exclusive > 0 ? RangeMode::kExclusive
                         : shared > 0 ? RangeMode::kShared : RangeMode::kNone;
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
  void Add(off_t start, off_t end, RangeMode mode, int delta);

  // Calls fn(from, to, holds) for consecutive pieces covering [start, end)
  // exactly, each with the holds that apply there (zero where none).
  template <typename Fn>
  void Walk(off_t start, off_t end, Fn&& fn) const {
    auto it = bounds_.upper_bound(start);
    Holds current;
    if (it != bounds_.begin()) current = std::prev(it)->second;
    off_t from = start;
    while (from < end) {
      const off_t to = (it == bounds_.end() || it->first > end) ? end : it->first;
      if (to > from) fn(from, to, current);
      if (it == bounds_.end() || it->first >= end) break;
      current = it->second;
      from = it->first;
      ++it;
    }
  }

  // The holds at one byte.
  Holds At(off_t offset) const;

  bool empty() const { return bounds_.empty(); }
  size_t segments() const { return bounds_.size(); }

 private:
  void Split(off_t at);
  void Coalesce(off_t at);

  std::map<off_t, Holds> bounds_;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_RANGE_TABLE_H_
