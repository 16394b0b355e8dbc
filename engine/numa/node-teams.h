#pragma once
// One worker team per NUMA node: a thread pinned to the node's cpus that runs
// its share of a step with an OpenMP team of the node's size (threads created
// by a pinned thread inherit its cpus), so that the node's weights are read by
// the node's own cores. With one node the caller's own threads are the team:
// no thread is started and nothing is pinned.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/numa/topology.h"

namespace lacuna {

class NodeTeams {
 public:
  // Throws lacuna::Error when a node has no cpu or a thread cannot be pinned.
  explicit NodeTeams(const Topology& topology);
  ~NodeTeams();
  NodeTeams(const NodeTeams&) = delete;
  NodeTeams& operator=(const NodeTeams&) = delete;

  int size() const { return static_cast<int>(busy_seconds_.size()); }
  // Runs task(node) on every node's team at once and returns when all have
  // finished; an exception of any task is rethrown here (the first one).
  // One run at a time (not thread-safe).
  void run(const std::function<void(int node)>& task);
  // Time each node spent in tasks, over every run so far.
  const std::vector<double>& busy_seconds() const { return busy_seconds_; }

 private:
  void serve(int node, std::vector<int> cpus);

  std::vector<double> busy_seconds_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  const std::function<void(int)>* task_ = nullptr;
  uint64_t generation_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace lacuna
