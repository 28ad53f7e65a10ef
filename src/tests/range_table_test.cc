// Tests for RangeTable: per-byte hold counts kept as a minimal map of
// segments.
#include "range_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace locker {
namespace {

Holds H(int shared, int exclusive) {
  Holds h;
  h.shared = shared;
  h.exclusive = exclusive;
  return h;
}

std::string Describe(const Holds& h) {
  return "{shared=" + std::to_string(h.shared) +
         ", exclusive=" + std::to_string(h.exclusive) + "}";
}

// The pieces Walk reports over [start, end).
using Piece = std::tuple<Pos, Pos, int, int>;
std::vector<Piece> Pieces(const RangeTable& table, Pos start, Pos end) {
  std::vector<Piece> out;
  table.Walk(start, end, [&](Pos from, Pos to, const Holds& h) {
    out.emplace_back(from, to, h.shared, h.exclusive);
  });
  return out;
}

TEST(RangeTableTest, StartsEmpty) {
  RangeTable table;
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(0u, table.segments());
  EXPECT_EQ(H(0, 0), table.At(0));
  EXPECT_EQ(H(0, 0), table.At(kRangeEnd - 1));
  EXPECT_EQ((std::vector<Piece>{{0, kRangeEnd, 0, 0}}),
            Pieces(table, 0, kRangeEnd));
}

TEST(RangeTableTest, HoldsMode) {
  EXPECT_EQ(RangeMode::kNone, H(0, 0).mode());
  EXPECT_EQ(RangeMode::kShared, H(3, 0).mode());
  EXPECT_EQ(RangeMode::kExclusive, H(0, 1).mode());
  EXPECT_EQ(RangeMode::kExclusive, H(2, 1).mode());
  EXPECT_LT(RangeMode::kNone, RangeMode::kShared);
  EXPECT_LT(RangeMode::kShared, RangeMode::kExclusive);
}

TEST(RangeTableTest, OneRange) {
  RangeTable table;
  table.Add(10, 20, RangeMode::kShared, +1);
  EXPECT_EQ(2u, table.segments());
  EXPECT_EQ(H(0, 0), table.At(9));
  EXPECT_EQ(H(1, 0), table.At(10));
  EXPECT_EQ(H(1, 0), table.At(19));
  EXPECT_EQ(H(0, 0), table.At(20));
  EXPECT_EQ((std::vector<Piece>{{0, 10, 0, 0}, {10, 20, 1, 0}, {20, 30, 0, 0}}),
            Pieces(table, 0, 30));
  // A walk that starts and ends inside segments is clipped to the request.
  EXPECT_EQ((std::vector<Piece>{{12, 18, 1, 0}}), Pieces(table, 12, 18));
  EXPECT_EQ((std::vector<Piece>{{15, 20, 1, 0}, {20, 25, 0, 0}}),
            Pieces(table, 15, 25));

  table.Add(10, 20, RangeMode::kShared, -1);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(0u, table.segments());
}

TEST(RangeTableTest, AdjacentEqualHoldsCoalesce) {
  RangeTable table;
  table.Add(0, 10, RangeMode::kShared, +1);
  table.Add(10, 20, RangeMode::kShared, +1);
  // One segment [0, 20) and its end: no key at 10.
  EXPECT_EQ(2u, table.segments());
  EXPECT_EQ((std::vector<Piece>{{0, 20, 1, 0}}), Pieces(table, 0, 20));

  table.Add(20, 30, RangeMode::kExclusive, +1);
  EXPECT_EQ(3u, table.segments());
  EXPECT_EQ((std::vector<Piece>{{0, 20, 1, 0}, {20, 30, 0, 1}, {30, 40, 0, 0}}),
            Pieces(table, 0, 40));

  table.Add(0, 10, RangeMode::kShared, -1);
  EXPECT_EQ((std::vector<Piece>{{0, 10, 0, 0}, {10, 20, 1, 0}, {20, 30, 0, 1}}),
            Pieces(table, 0, 30));
  table.Add(20, 30, RangeMode::kExclusive, -1);
  table.Add(10, 20, RangeMode::kShared, -1);
  EXPECT_TRUE(table.empty());
}

TEST(RangeTableTest, OverlappingHolds) {
  RangeTable table;
  table.Add(0, 100, RangeMode::kExclusive, +1);
  table.Add(50, 150, RangeMode::kShared, +1);
  EXPECT_EQ(
      (std::vector<Piece>{
          {0, 50, 0, 1}, {50, 100, 1, 1}, {100, 150, 1, 0}, {150, 160, 0, 0}}),
      Pieces(table, 0, 160));
  EXPECT_EQ(RangeMode::kExclusive, table.At(75).mode());

  // Releasing the exclusive hold leaves exactly the shared one.
  table.Add(0, 100, RangeMode::kExclusive, -1);
  EXPECT_EQ(2u, table.segments());
  EXPECT_EQ(
      (std::vector<Piece>{{0, 50, 0, 0}, {50, 150, 1, 0}, {150, 160, 0, 0}}),
      Pieces(table, 0, 160));

  table.Add(50, 150, RangeMode::kShared, -1);
  EXPECT_TRUE(table.empty());
}

TEST(RangeTableTest, NestedAndRepeatedHolds) {
  RangeTable table;
  table.Add(0, 100, RangeMode::kShared, +1);
  table.Add(0, 100, RangeMode::kShared, +1);
  table.Add(40, 60, RangeMode::kShared, +1);
  EXPECT_EQ(4u, table.segments());
  EXPECT_EQ(H(2, 0), table.At(39));
  EXPECT_EQ(H(3, 0), table.At(40));
  EXPECT_EQ(H(2, 0), table.At(60));
  table.Add(40, 60, RangeMode::kShared, -1);
  EXPECT_EQ(2u, table.segments());
  table.Add(0, 100, RangeMode::kShared, -1);
  EXPECT_EQ(2u, table.segments());
  EXPECT_EQ(H(1, 0), table.At(0));
  table.Add(0, 100, RangeMode::kShared, -1);
  EXPECT_TRUE(table.empty());
}

TEST(RangeTableTest, ToEndOfFile) {
  RangeTable table;
  table.Add(100, kRangeEnd, RangeMode::kShared, +1);
  // No key is ever stored for kRangeEnd itself.
  EXPECT_EQ(1u, table.segments());
  EXPECT_EQ(H(0, 0), table.At(99));
  EXPECT_EQ(H(1, 0), table.At(100));
  EXPECT_EQ(H(1, 0), table.At(kRangeEnd - 1));
  EXPECT_EQ((std::vector<Piece>{{0, 100, 0, 0}, {100, kRangeEnd, 1, 0}}),
            Pieces(table, 0, kRangeEnd));

  table.Add(0, 200, RangeMode::kExclusive, +1);
  EXPECT_EQ((std::vector<Piece>{
                {0, 100, 0, 1}, {100, 200, 1, 1}, {200, kRangeEnd, 1, 0}}),
            Pieces(table, 0, kRangeEnd));
  table.Add(150, kRangeEnd, RangeMode::kShared, +1);
  EXPECT_EQ(H(2, 0), table.At(kRangeEnd - 1));

  table.Add(100, kRangeEnd, RangeMode::kShared, -1);
  table.Add(0, 200, RangeMode::kExclusive, -1);
  EXPECT_EQ((std::vector<Piece>{{0, 150, 0, 0}, {150, kRangeEnd, 1, 0}}),
            Pieces(table, 0, kRangeEnd));
  table.Add(150, kRangeEnd, RangeMode::kShared, -1);
  EXPECT_TRUE(table.empty());

  // The whole of the file, from byte 0.
  table.Add(0, kRangeEnd, RangeMode::kExclusive, +1);
  EXPECT_EQ(1u, table.segments());
  EXPECT_EQ(H(0, 1), table.At(0));
  EXPECT_EQ(H(0, 1), table.At(kRangeEnd - 1));
  table.Add(0, kRangeEnd, RangeMode::kExclusive, -1);
  EXPECT_TRUE(table.empty());
}

TEST(RangeTableTest, WalkCoversRequestExactly) {
  RangeTable table;
  table.Add(5, 10, RangeMode::kShared, +1);
  table.Add(20, 30, RangeMode::kExclusive, +1);
  for (Pos start = 0; start < 35; ++start) {
    for (Pos end = start + 1; end <= 35; ++end) {
      Pos next = start;
      table.Walk(start, end, [&](Pos from, Pos to, const Holds& h) {
        EXPECT_EQ(next, from)
            << "gap or overlap in [" << start << ", " << end << ")";
        EXPECT_LT(from, to);
        for (Pos b = from; b < to; ++b)
          EXPECT_EQ(table.At(b), h) << "byte " << b;
        next = to;
      });
      EXPECT_EQ(end, next) << "walk of [" << start << ", " << end
                           << ") stopped early";
    }
  }
}

// Brute force: one Holds per byte 0..kModelBytes-1; the last one also stands
// for every byte after it (ranges to kRangeEnd).
constexpr int kModelBytes = 201;

struct Op {
  Pos start;
  Pos end;  // kRangeEnd or <= kModelBytes - 1
  RangeMode mode;
};

void ApplyToModel(std::vector<Holds>* model, const Op& op, int delta) {
  const Pos last = op.end == kRangeEnd ? kModelBytes : op.end;
  for (Pos b = op.start; b < last; ++b) {
    (op.mode == RangeMode::kExclusive ? (*model)[b].exclusive
                                      : (*model)[b].shared) += delta;
  }
}

// Compares every byte, the walk and the number of segments (the table must
// stay minimal: one key per change of holds).
void ExpectMatchesModel(const RangeTable& table,
                        const std::vector<Holds>& model,
                        const std::string& where) {
  size_t changes = 0;
  Holds previous;
  for (int b = 0; b < kModelBytes; ++b) {
    ASSERT_EQ(model[b], table.At(b))
        << where << ": byte " << b << " model " << Describe(model[b])
        << " table " << Describe(table.At(b));
    if (model[b] != previous) ++changes;
    previous = model[b];
  }
  ASSERT_EQ(model.back(), table.At(kRangeEnd - 1)) << where;
  ASSERT_EQ(changes, table.segments()) << where;
  ASSERT_EQ(changes == 0, table.empty()) << where;

  Pos next = 0;
  Holds last_piece;
  bool first = true;
  table.Walk(0, kRangeEnd, [&](Pos from, Pos to, const Holds& h) {
    ASSERT_EQ(next, from) << where;
    if (!first) {
      ASSERT_NE(last_piece, h) << where << ": equal neighbours at " << from;
    }
    const Pos stop = to == kRangeEnd ? kModelBytes : to;
    for (Pos b = from; b < stop && b < kModelBytes; ++b)
      ASSERT_EQ(model[b], h) << where;
    last_piece = h;
    first = false;
    next = to;
  });
  ASSERT_EQ(kRangeEnd, next) << where;
}

unsigned SeedFromEnvironment(unsigned fallback) {
  const char* text = std::getenv("LOCKER_TEST_SEED");
  return text && *text ? static_cast<unsigned>(std::strtoul(text, nullptr, 10))
                       : fallback;
}

TEST(RangeTableTest, RandomisedAgainstPerByteModel) {
  // LOCKER_TEST_SEED=N replays one seed.
  std::vector<unsigned> seeds = {1, 2, 3, 42, 2024, 77777};
  if (std::getenv("LOCKER_TEST_SEED")) seeds = {SeedFromEnvironment(0)};
  for (const unsigned seed : seeds) {
    SCOPED_TRACE("seed " + std::to_string(seed) +
                 " (replay with LOCKER_TEST_SEED=" + std::to_string(seed) +
                 ")");
    std::mt19937 random(seed);
    auto uniform = [&](int lo, int hi) {
      return std::uniform_int_distribution<int>(lo, hi)(random);
    };
    RangeTable table;
    std::vector<Holds> model(kModelBytes);
    std::vector<Op> live;
    for (int step = 0; step < 3000; ++step) {
      const bool add =
          live.empty() || (live.size() < 60 && uniform(0, 99) < 55);
      if (add) {
        Op op;
        op.start = uniform(0, kModelBytes - 2);
        op.end = uniform(0, 9) == 0 ? kRangeEnd
                                    : uniform(op.start + 1, kModelBytes - 1);
        op.mode = uniform(0, 1) ? RangeMode::kExclusive : RangeMode::kShared;
        table.Add(op.start, op.end, op.mode, +1);
        ApplyToModel(&model, op, +1);
        live.push_back(op);
      } else {
        const size_t index = uniform(0, static_cast<int>(live.size()) - 1);
        const Op op = live[index];
        live.erase(live.begin() + index);
        table.Add(op.start, op.end, op.mode, -1);
        ApplyToModel(&model, op, -1);
      }
      ASSERT_NO_FATAL_FAILURE(
          ExpectMatchesModel(table, model, "step " + std::to_string(step)));
    }
    // Removing everything leaves nothing behind.
    while (!live.empty()) {
      const Op op = live.back();
      live.pop_back();
      table.Add(op.start, op.end, op.mode, -1);
    }
    EXPECT_TRUE(table.empty());
    EXPECT_EQ(0u, table.segments());
  }
}

TEST(RangeTableTest, ManyDisjointRanges) {
  constexpr int kRanges = 10000;
  RangeTable table;
  for (int i = 0; i < kRanges; ++i) {
    table.Add(static_cast<Pos>(i) * 10, static_cast<Pos>(i) * 10 + 5,
              i % 2 ? RangeMode::kExclusive : RangeMode::kShared, +1);
  }
  // A start and an end key for each range, since none of them touch.
  EXPECT_EQ(2u * kRanges, table.segments());
  EXPECT_EQ(H(1, 0), table.At(0));
  EXPECT_EQ(H(0, 0), table.At(5));
  EXPECT_EQ(H(0, 1), table.At(Pos{kRanges - 1} * 10 + 4));
  EXPECT_EQ(H(0, 0), table.At(Pos{kRanges} * 10));

  // Covering the gaps too: no byte before the end is free any more.
  for (int i = 0; i < kRanges; ++i) {
    table.Add(static_cast<Pos>(i) * 10, static_cast<Pos>(i) * 10 + 10, RangeMode::kShared, +1);
  }
  // [10i, 10i+5) still differ from [10i+5, 10i+10), and the last ends at 0.
  EXPECT_EQ(2u * kRanges + 1, table.segments());
  for (int i = 0; i < kRanges; ++i) {
    table.Add(static_cast<Pos>(i) * 10, static_cast<Pos>(i) * 10 + 10, RangeMode::kShared, -1);
  }

  for (int i = kRanges - 1; i >= 0; i -= 2) {  // every other one, from the top
    table.Add(static_cast<Pos>(i) * 10, static_cast<Pos>(i) * 10 + 5, RangeMode::kExclusive, -1);
  }
  EXPECT_EQ(size_t{kRanges}, table.segments());
  for (int i = 0; i < kRanges; i += 2) {
    table.Add(static_cast<Pos>(i) * 10, static_cast<Pos>(i) * 10 + 5, RangeMode::kShared, -1);
  }
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(0u, table.segments());
}

}  // namespace
}  // namespace locker
