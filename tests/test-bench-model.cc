// The whole-model benchmark's arithmetic over rounds (the runs themselves
// are exercised through the CLI in test-cli).
#include <gtest/gtest.h>

#include "bench/model/model-bench.h"
#include "sparse/error.h"

namespace lacuna::bench {
namespace {

PairedSpeed round_of(std::vector<double> tps, std::vector<double> ratio, double prefill_tps, double prefill_ratio) {
  return {.decode_tps = std::move(tps), .decode_ratio = std::move(ratio), .prefill_tps = prefill_tps, .prefill_ratio = prefill_ratio};
}

TEST(MedianOfRounds, TakesEachFiguresMedianOnItsOwn) {
  // Each figure's median comes from a different round: no round is picked whole.
  const PairedSpeed m = median_of_rounds({round_of({10, 300}, {1.5, 0.9}, 700, 1.2), round_of({30, 100}, {0.5, 1.1}, 500, 0.8),
                                          round_of({20, 200}, {1.0, 1.3}, 900, 1.0)});
  EXPECT_EQ(m.decode_tps, (std::vector<double>{20, 200}));
  EXPECT_EQ(m.decode_ratio, (std::vector<double>{1.0, 1.1}));
  EXPECT_EQ(m.prefill_tps, 700);
  EXPECT_EQ(m.prefill_ratio, 1.0);
}

TEST(MedianOfRounds, AveragesTheMiddleTwoOfAnEvenCount) {
  const PairedSpeed m = median_of_rounds({round_of({10}, {1.0}, 100, 2.0), round_of({40}, {4.0}, 400, 1.0), round_of({20}, {2.0}, 200, 4.0),
                                          round_of({30}, {3.0}, 300, 3.0)});
  EXPECT_EQ(m.decode_tps, (std::vector<double>{25}));
  EXPECT_EQ(m.decode_ratio, (std::vector<double>{2.5}));
  EXPECT_EQ(m.prefill_tps, 250);
  EXPECT_EQ(m.prefill_ratio, 2.5);
}

TEST(MedianOfRounds, OneRoundIsItself) {
  const PairedSpeed m = median_of_rounds({round_of({12.5, 40}, {2.25, 1.5}, 321, 1.25)});
  EXPECT_EQ(m.decode_tps, (std::vector<double>{12.5, 40}));
  EXPECT_EQ(m.decode_ratio, (std::vector<double>{2.25, 1.5}));
  EXPECT_EQ(m.prefill_tps, 321);
  EXPECT_EQ(m.prefill_ratio, 1.25);
}

TEST(MedianOfRounds, RefusesNoRoundsAndRoundsOfOtherBatchSizes) {
  EXPECT_THROW(median_of_rounds({}), Error);
  EXPECT_THROW(median_of_rounds({round_of({10, 20}, {1, 1}, 1, 1), round_of({10}, {1}, 1, 1)}), Error);
  EXPECT_THROW(median_of_rounds({round_of({10, 20}, {1, 1}, 1, 1), round_of({10, 20}, {1}, 1, 1)}), Error);
}

}  // namespace
}  // namespace lacuna::bench
