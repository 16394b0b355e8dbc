// The OpenMP threads are started once and reused: no product, whatever its
// size or kernel, starts threads of its own. A parallel region met inside an
// inactive one (an `if` clause that was false) is a nested team, for which
// libgomp starts and ends a new thread on every call; spmm_run_all once did
// that for every single-job product converting 64 K activations or more,
// which cost a 12-token product 2-4x its time. Counted by wrapping
// pthread_create in this executable (it precedes libc and libgomp's own).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <thread>

#include "kernels/densified-product.h"
#include "kernels/spmm.h"
#include "sparse/convert.h"
#include "sparse/quantize.h"
#include "tests/test-util.h"

namespace {
std::atomic<int> g_threads_started{0};
}  // namespace

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attr, void* (*start)(void*), void* arg) {
  using Create = int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  static const auto next = reinterpret_cast<Create>(dlsym(RTLD_NEXT, "pthread_create"));
  g_threads_started.fetch_add(1);
  return next(thread, attr, start, arg);
}

namespace lacuna {
namespace {

Tensor bitmap_weight(DType dtype, size_t rows, size_t cols) {
  const auto w = testing::random_sparse(rows, cols, 0.7, false, rows * 7 + cols);
  return pack(quantize_matrix(w.data(), rows, cols, dtype), Format::bitmap, {});
}

TEST(Threads, TheCountSeesAThreadStarted) {
  const int before = g_threads_started.load();
  std::thread([] {}).join();
  EXPECT_EQ(g_threads_started.load(), before + 1);
}

TEST(Threads, ProductsOfEverySizeReuseTheOpenMpThreads) {
  if (omp_get_max_threads() < 2) GTEST_SKIP() << "one OpenMP thread: there is no team to reuse";
  // 5632 columns, a down projection of the mini model: 12 tokens are the
  // first count whose conversion runs in parallel (64 K values).
  constexpr size_t kRows = 96, kCols = 5632;
  const Tensor int8 = bitmap_weight(DType::int8, kRows, kCols), bf16 = bitmap_weight(DType::bf16, kRows, kCols);
  const auto x = testing::random_activations(64, kCols, 5);
  std::vector<float> y(64 * kRows), y2(64 * kRows);
  const auto run_all_sizes = [&] {
    for (size_t n : {1, 4, 11, 12, 16, 23, 24, 64}) {
      spmm(int8, x.data(), n, y.data());
      spmm(bf16, x.data(), n, y.data());
    }
    densified_product(int8, DType::int8, x.data(), 32, y.data());
    densified_product(bf16, DType::bf16, x.data(), 32, y.data());
    const SpmmUkernel* kernel = choose_spmm(int8.desc(), 12).kernel;
    const SpmmJob jobs[] = {{kernel, &int8, x.data(), 12, y.data()}, {kernel, &int8, x.data(), 12, y2.data()}};
    spmm_run_all(jobs);
    spmm_run_all({jobs, 1});
  };
  run_all_sizes();  // starts the team and whatever the first calls start once
  const int before = g_threads_started.load();
  for (int round = 0; round < 3; ++round) run_all_sizes();
  EXPECT_EQ(g_threads_started.load(), before) << "products started threads of their own";
}

}  // namespace
}  // namespace lacuna
