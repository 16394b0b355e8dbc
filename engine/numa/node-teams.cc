#include "engine/numa/node-teams.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <cstring>
#include <utility>

#include "sparse/error.h"

namespace lacuna {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

NodeTeams::NodeTeams(const Topology& topology) : busy_seconds_(topology.nodes.size(), 0.0) {
  for (size_t n = 0; n < topology.nodes.size(); ++n)
    if (topology.nodes[n].cpus.empty()) throw Error("NUMA node " + std::to_string(n) + " has no cpu to run its team");
  if (topology.nodes.size() < 2) return;
  for (size_t n = 0; n < topology.nodes.size(); ++n) workers_.emplace_back(&NodeTeams::serve, this, static_cast<int>(n), topology.nodes[n].cpus);
}

NodeTeams::~NodeTeams() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  start_.notify_all();
  for (std::thread& w : workers_) w.join();
}

void NodeTeams::serve(int node, std::vector<int> cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  // A team that cannot be pinned still computes the right thing, on any cpu;
  // the error is reported at the first run rather than lost in this thread.
  const int pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  omp_set_num_threads(static_cast<int>(cpus.size()));
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock lock(mutex_);
    start_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    const std::function<void(int)>& task = *task_;
    lock.unlock();
    const auto began = std::chrono::steady_clock::now();
    std::exception_ptr error;
    try {
      if (pinned != 0) throw Error("cannot pin NUMA node " + std::to_string(node) + "'s team to its cpus: " + std::strerror(pinned));
      task(node);
    } catch (...) {
      error = std::current_exception();
    }
    const double busy = seconds_since(began);
    lock.lock();
    busy_seconds_[static_cast<size_t>(node)] += busy;
    if (error && !error_) error_ = error;
    if (--running_ == 0) done_.notify_one();
  }
}

void NodeTeams::run(const std::function<void(int)>& task) {
  if (workers_.empty()) {
    const auto began = std::chrono::steady_clock::now();
    task(0);
    busy_seconds_[0] += seconds_since(began);
    return;
  }
  std::unique_lock lock(mutex_);
  task_ = &task;
  running_ = size();
  error_ = nullptr;
  ++generation_;
  start_.notify_all();
  done_.wait(lock, [&] { return running_ == 0; });
  task_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace lacuna
