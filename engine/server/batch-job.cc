#include "engine/server/batch-job.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "engine/runtime/progress-bar.h"
#include "engine/server/openai-api.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A line's choices as they end.
struct Gathered {
  explicit Gathered(int32_t n) : results(static_cast<size_t>(n)), remaining(static_cast<size_t>(n)) {}
  std::vector<GenerateResult> results;
  size_t remaining;
  std::string refused;  // why the scheduler refused a choice: the line's error
};

// The ids an earlier run finished, from its complete lines; a last line cut
// off by an interruption is removed so that appending starts on a new line.
std::set<std::string> finished_ids(const std::string& out_path) {
  std::set<std::string> ids;
  std::ifstream in(out_path, std::ios::binary);
  if (!in) return ids;
  std::string line;
  uint64_t complete_bytes = 0, offset = 0;
  while (std::getline(in, line)) {
    const bool has_newline = !in.eof();
    offset += line.size() + (has_newline ? 1 : 0);
    if (!has_newline) break;
    try {
      const json j = json::parse(line);
      if (j.is_object() && j.contains("id") && j["id"].is_string()) ids.insert(j["id"].get<std::string>());
      complete_bytes = offset;
    } catch (const json::exception&) {  // parse_error, or out_of_range for a number beyond double's range
      break;  // a damaged line: everything from here is done again
    }
  }
  in.close();
  if (fs::file_size(out_path) != complete_bytes) fs::resize_file(out_path, complete_bytes);
  return ids;
}

struct Line {
  std::string id;
  Endpoint endpoint = Endpoint::completions;
  json body;
};

// The request of one input line; HttpError for a line that is no request.
Line read_line(const std::string& text, size_t number) {
  Line l;
  l.id = "line-" + std::to_string(number);
  auto refuse = [&](const std::string& message, const std::string& param) {
    throw std::make_pair(l.id, HttpError{400, message, "invalid_request_error", param, ""});
  };
  json j;
  try {
    // As the server reads a body: UTF-8 checked first, then JSON (a number
    // beyond double's range is malformed too), each refusal an HttpError.
    j = parse_body(text);
  } catch (const HttpError& e) {
    throw std::make_pair(l.id, e);
  }
  if (!j.is_object()) refuse("a line must be a JSON object", "");
  if (j.contains("custom_id") && j.contains("body")) {
    if (j["custom_id"].is_string()) l.id = j["custom_id"].get<std::string>();
    if (j.contains("url") && !j["url"].is_string()) refuse("'url' must be a string", "url");
    const std::string url = j.value("url", "/v1/completions");
    l.endpoint = url.ends_with("/chat/completions") ? Endpoint::chat_completions : Endpoint::completions;
    l.body = j["body"];
  } else {
    if (j.contains("id") && j["id"].is_string()) l.id = j["id"].get<std::string>();
    l.endpoint = j.contains("messages") ? Endpoint::chat_completions : Endpoint::completions;
    l.body = std::move(j);
  }
  return l;
}

}  // namespace

BatchSummary run_batch(std::shared_ptr<const Model> model, const std::string& in_path, const std::string& out_path, const BatchOptions& options) {
  std::ifstream in(in_path, std::ios::binary);
  if (!in) throw Error(in_path + ": cannot open");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
  if (in.bad()) throw Error(in_path + ": cannot read");

  const std::set<std::string> done_before = finished_ids(out_path);
  std::ofstream out(out_path, std::ios::binary | std::ios::app);
  if (!out) throw Error(out_path + ": cannot open for writing");

  BatchSummary summary;
  summary.lines = lines.size();
  const auto start = std::chrono::steady_clock::now();
  std::mutex mutex;  // guards out, summary, in_flight
  std::condition_variable finished;
  size_t in_flight = 0;
  ProgressBar progress(options.progress, static_cast<int64_t>(lines.size()), "requests");
  auto show = [&](size_t done) {
    char detail[64];
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::snprintf(detail, sizeof detail, "%zu failed, %.1f tokens/s", summary.failed, seconds > 0 ? static_cast<double>(summary.generated_tokens) / seconds : 0.0);
    progress.update(static_cast<int64_t>(done), detail);
  };
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  // Called with the mutex held.
  auto write = [&](const json& record, bool ok) {
    out << record.dump() << '\n';
    out.flush();
    if (!out) throw Error(out_path + ": cannot write");
    ++(ok ? summary.succeeded : summary.failed);
    show(summary.skipped + summary.succeeded + summary.failed);
  };
  auto write_error = [&](const std::string& id, const HttpError& e) {
    const std::lock_guard lock(mutex);
    write({{"id", id}, {"error", error_body(e)["error"]}}, false);
  };

  Scheduler scheduler(model, options.scheduler);
  std::set<std::string> seen;
  std::random_device entropy;
  for (size_t i = 0; i < lines.size(); ++i) {
    Line line;
    try {
      line = read_line(lines[i], i + 1);
    } catch (const std::pair<std::string, HttpError>& bad) {
      if (!done_before.contains(bad.first)) write_error(bad.first, bad.second);
      else ++summary.skipped;
      continue;
    }
    if (done_before.contains(line.id)) {
      const std::lock_guard lock(mutex);
      ++summary.skipped;
      continue;
    }
    if (!seen.insert(line.id).second) {
      write_error(line.id, {400, "the id \"" + line.id + "\" appears on an earlier line", "invalid_request_error", "id", ""});
      continue;
    }
    ApiRequest request;
    try {
      request = parse_request(line.body, line.endpoint, *model, (static_cast<uint64_t>(entropy()) << 32) | entropy());
      if (request.stream) throw HttpError{400, "'stream' has no meaning in a batch job", "invalid_request_error", "stream", ""};
    } catch (const HttpError& e) {
      write_error(line.id, e);
      continue;
    }
    const ResponseIds ids{line.id, std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(),
                          options.model_name};
    // One sequence per choice; the line is written when the last ends.
    auto gathered = std::make_shared<Gathered>(request.n);
    // Called with the mutex held.
    auto end_choices = [&, request, ids, gathered](size_t count) {
      if ((gathered->remaining -= count) > 0) return;
      const auto& results = gathered->results;
      if (!gathered->refused.empty())
        write({{"id", ids.id}, {"error", error_body({400, gathered->refused, "invalid_request_error", "", ""})["error"]}}, false);
      else if (std::any_of(results.begin(), results.end(), [](const GenerateResult& r) { return r.finish_reason == "error"; }))
        write({{"id", ids.id}, {"error", error_body({500, "the forward pass failed", "server_error", "", ""})["error"]}}, false);
      else
        write({{"id", ids.id}, {"response", response_json(request, results, ids)}}, true);
      --in_flight;
      finished.notify_all();
    };
    {
      const std::lock_guard lock(mutex);
      ++in_flight;
    }
    for (int32_t choice = 0; choice < request.n; ++choice) {
      RequestCallbacks callbacks;
      callbacks.on_done = [&, gathered, end_choices, choice](const GenerateResult& result) {
        const std::lock_guard lock(mutex);
        summary.generated_tokens += static_cast<int64_t>(result.tokens.size());
        gathered->results[static_cast<size_t>(choice)] = result;
        end_choices(1);
      };
      // A full queue: wait for a request to end, then try again.
      bool refused = false;
      for (;;) {
        try {
          scheduler.submit(request.prompt, choice_options(request, choice), callbacks);
          break;
        } catch (const QueueFull&) {
          std::unique_lock lock(mutex);
          finished.wait_for(lock, std::chrono::milliseconds(50));
        } catch (const Error& e) {
          const std::lock_guard lock(mutex);
          gathered->refused = e.what();
          end_choices(static_cast<size_t>(request.n - choice));  // this choice and the ones not submitted
          refused = true;
          break;
        }
      }
      if (refused) break;
    }
  }
  {
    std::unique_lock lock(mutex);
    finished.wait(lock, [&] { return in_flight == 0; });
    show(lines.size());
  }
  summary.seconds = elapsed();
  return summary;
}

}  // namespace lacuna
