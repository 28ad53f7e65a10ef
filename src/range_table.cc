#include "range_table.h"

#include <iterator>

namespace locker {

Holds RangeTable::At(Pos offset) const {
  if (solo_) return offset >= solo_.start && offset < solo_.end ? solo_.holds : Holds();
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

// Moves the single range into the map, as Add would have stored it.
void RangeTable::Spill() {
  const Solo solo = solo_;
  solo_ = Solo();
  bounds_.emplace(solo.start, solo.holds);
  if (solo.end != kRangeEnd) bounds_.emplace(solo.end, Holds());
}

void RangeTable::Add(Pos start, Pos end, RangeMode mode, int delta) {
  if (solo_ && solo_.start == start && solo_.end == end) {
    solo_.holds.Add(mode, delta);
    if (solo_.holds == Holds()) solo_ = Solo();
    return;
  }
  if (!solo_ && bounds_.empty() && delta > 0) {
    solo_.start = start;
    solo_.end = end;
    solo_.holds = Holds();
    solo_.holds.Add(mode, delta);
    return;
  }
  if (solo_) Spill();
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
