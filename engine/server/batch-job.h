#pragma once
// `lacuna batch`: an offline job over a JSONL file of requests, all fed to
// the continuous-batching scheduler at once. Each input line is a request
// body as POST /v1/completions or /v1/chat/completions takes it (chat when
// it has "messages"), with an "id"; or an OpenAI batch line
// ({"custom_id", "url", "body"}). Each output line is {"id", "response"} or
// {"id", "error"}, written as soon as the request ends. Rerunning with the
// same output skips the ids already there (a cut-off last line is dropped).
#include <cstdint>
#include <memory>
#include <string>

#include "engine/server/scheduler.h"

namespace lacuna {

struct BatchOptions {
  SchedulerOptions scheduler;
  std::string model_name = "lacuna";
  bool progress = true;  // a progress bar on stderr (when it is a terminal)
};

struct BatchSummary {
  size_t lines = 0, skipped = 0, succeeded = 0, failed = 0;
  int64_t generated_tokens = 0;
  double seconds = 0;
};

// Throws lacuna::Error when a file cannot be read or written.
BatchSummary run_batch(std::shared_ptr<const Model> model, const std::string& in_path, const std::string& out_path, const BatchOptions& options);

}  // namespace lacuna
