#include "range_table.h"

#include <iterator>

namespace locker {

Holds RangeTable::At(Pos offset) const {
  auto it = bounds_.upper_bound(offset);
  return it == bounds_.begin() ? Holds() : std::prev(it)->second;
}

void RangeTable::Split(Pos at) {
  if (at == kRangeEnd) return;
  auto it = bounds_.lower_bound(at);
  if (it != bounds_.end() && it->first == at) return;
  bounds_.emplace_hint(it, at, At(at));
}

// Drops the key at `at` when it repeats the holds before it.
void RangeTable::Coalesce(Pos at) {
  auto it = bounds_.find(at);
  if (it == bounds_.end()) return;
  const Holds before = it == bounds_.begin() ? Holds() : std::prev(it)->second;
  if (it->second == before) bounds_.erase(it);
}

void RangeTable::Add(Pos start, Pos end, RangeMode mode, int delta) {
  Split(start);
  Split(end);
  for (auto it = bounds_.find(start); it != bounds_.end() && it->first < end; ++it) {
    (mode == RangeMode::kExclusive ? it->second.exclusive : it->second.shared) += delta;
  }
  // Inside the range every piece moved by the same delta, so only the two
  // edges can now equal their neighbours.
  Coalesce(end);
  Coalesce(start);
}

}  // namespace locker
