// The `lacuna` tool as a user runs it: exit codes and messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu-features.h"
#include "sparse/model-file.h"
#include "sparse/quantize.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr
};

// Runs `lacuna ARGS` with optional environment assignments ("NAME=value ").
CliRun run(const std::string& args, const std::string& env = "") {
  const std::string cmd = env + LACUNA_CLI_PATH + " " + args + " 2>&1";
  std::FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t got = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), got);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

// A CSV line's comma-separated fields (the benchmarks' CSVs quote nothing).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> f;
  std::istringstream fields(line);
  for (std::string field; std::getline(fields, field, ',');) f.push_back(field);
  return f;
}

// Files of a test program live in its scratch directory, removed at exit.
std::string temp_path(const std::string& name) { return (lacuna::testing::scratch() / name).string(); }

TEST(Cli, InfoListsTensorsOfAGoodFile) {
  const std::string path = temp_path("good.lacuna");
  {
    ModelFileWriter w(path, R"({"architecture":"test"})");
    std::vector<float> v(64 * 64, 0.5f);
    w.add("blk.0.w", quantize_matrix(v.data(), 64, 64, DType::bf16));
    w.finish();
  }
  const CliRun r = run("info " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("blk.0.w"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("64x64"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"architecture\":\"test\""), std::string::npos) << r.output;

  // Truncated and corrupted copies: a clear error and a non-zero exit, never a crash.
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string bad = temp_path("bad.lacuna");
  for (size_t cut : {size_t{0}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(bad, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
    const CliRun t = run("info " + bad);
    EXPECT_EQ(t.exit_code, 1) << t.output;
    EXPECT_NE(t.output.find("lacuna: error: " + bad), std::string::npos) << t.output;
    EXPECT_NE(t.output.find("truncated"), std::string::npos) << t.output;
  }
  std::string flipped = bytes;
  flipped[flipped.size() - 200] ^= 0x10;
  std::ofstream(bad, std::ios::binary | std::ios::trunc).write(flipped.data(), static_cast<std::streamsize>(flipped.size()));
  const CliRun c = run("info " + bad);
  EXPECT_EQ(c.exit_code, 1) << c.output;
  EXPECT_NE(c.output.find("checksum mismatch"), std::string::npos) << c.output;
}

TEST(Cli, MissingFileAndBadArguments) {
  CliRun r = run("info /nonexistent/x.lacuna");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("cannot open"), std::string::npos) << r.output;
  r = run("info");
  EXPECT_NE(r.exit_code, 0);
  r = run("no-such-command");
  EXPECT_NE(r.exit_code, 0);
}

TEST(Cli, CpuinfoShowsDispatchAndHonoursMaxIsa) {
  CliRun r = run("cpuinfo");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("lacuna_spmm_bitmap_bf16_ukernel_"), std::string::npos) << r.output;
  // The instruction-rate decision is stated; without avx512_bf16 VDPBF16PS is not usable at all.
  EXPECT_NE(r.output.find(cpu_info().features & kAvx512Bf16 ? "VDPBF16PS multiply-adds per second vs f32 FMAs" : "VDPBF16PS: not usable"), std::string::npos)
      << r.output;
  r = run("cpuinfo", "LACUNA_MAX_ISA=avx2 ");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("VDPBF16PS: not usable"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cap avx2, from LACUNA_MAX_ISA"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lacuna_spmm_bitmap_bf16_ukernel_1x4__xsimd_avx2"), std::string::npos) << r.output;
  if (cpu_info().usable & kAvx512F) {
    EXPECT_NE(r.output.find("LACUNA_MAX_ISA=avx2 excludes avx512f"), std::string::npos) << r.output;
  }
  r = run("cpuinfo", "LACUNA_MAX_ISA=bogus ");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("LACUNA_MAX_ISA='bogus' is not one of"), std::string::npos) << r.output;
}

TEST(Cli, BenchSweepRefusesBadArguments) {
  for (const std::string args : {"--shapes 6144-32768", "--shapes '10->'", "--shapes 5x0", "--shapes abc", "--formats dense,zip",
                                 "--dtypes fp8", "--sparsity 1.5", "--batch 0"}) {
    const CliRun r = run("bench sweep " + args);
    EXPECT_NE(r.exit_code, 0) << args << ": " << r.output;
    EXPECT_EQ(r.output.find("memory read bandwidth"), std::string::npos) << args << " started measuring";
  }
}

TEST(Cli, BenchSweepRunsATinyGrid) {
  const std::string csv = temp_path("sweep.csv");
  const CliRun r = run("bench sweep --shapes '256->512' --sparsity 0.9 --batch 1,16 --dtypes bf16 --working-set-gib 0 --seconds 0.01 --csv " + csv);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("shape,batch,sparsity,format,dtype,isa,kernel,median_ms,dense_bf16_ms,speedup_vs_dense,pct_bandwidth", 0), 0u) << header;
  size_t rows = 0;
  for (std::string line; std::getline(in, line);) rows += line.rfind("256->512,", 0) == 0;
  EXPECT_EQ(rows, 2u * 3u);  // bitmap, csr and the planner's row at two batch sizes
}

TEST(Cli, SelftestRunsAndEveryKernelMatches) {
  const std::string path = temp_path("demo.lacuna");
  const CliRun r = run("selftest --rows 40 --cols 130 -n 3 --out " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("every kernel matches the dense product within its tolerance"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("s90.bitmap.int8"), std::string::npos) << r.output;
}

TEST(Cli, DemoSynthesisesConvertsAndGenerates) {
  const CliRun r = run("demo --preset tiny -n 8");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--sparsity 0.70"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("decode"), std::string::npos) << r.output;
}

TEST(Cli, ModelPipelineAndItsErrors) {
  const std::string dir = temp_path("hf"), model = temp_path("model.lacuna"), logits = temp_path("logits.f32");
  ASSERT_EQ(run("synth --arch mixtral --preset tiny " + dir).exit_code, 0);
  CliRun r = run("convert " + dir + " " + model + " --sparsity 0.5 --dtype int8 --output-dtype bf8");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--output-dtype: bf8 not in"), std::string::npos) << r.output;
  r = run("convert " + dir + " " + model + " --sparsity 0.5 --dtype bf16 --output-dtype int8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // convert's line for a tensor: its name, shape, format, dtype, ...
  const auto line_of = [text = "\n" + r.output](const std::string& tensor) {
    const size_t at = text.find("\n" + tensor + " ");
    return at == std::string::npos ? std::string() : text.substr(at + 1, text.find('\n', at + 1) - at - 1);
  };
  EXPECT_NE(line_of("output").find(" int8 "), std::string::npos) << r.output;
  EXPECT_NE(line_of("layers.0.expert.0.down").find(" bf16 "), std::string::npos) << r.output;
  EXPECT_NE(line_of("embedding").find(" bf16 "), std::string::npos) << r.output;
  r = run("convert " + dir + " " + model + " --sparsity 0.5 --dtype int8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layers.1.expert.3.gate_up"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("smaller than dense bf16"), std::string::npos) << r.output;

  r = run("logits " + model + " --tokens \"1 7 9 300\" --out " + logits);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::filesystem::file_size(logits), 4u * 512u * sizeof(float));

  r = run("run " + model + " --tokens \"1 7 9\" -n 5");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("decode: 5 tokens"), std::string::npos) << r.output;
  r = run("run " + model + " --tokens \"1 7 9\" -n 5 --frequency-penalty 0.5 --presence-penalty -1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const std::string flag : {"--frequency-penalty 2.5", "--presence-penalty -3", "--presence-penalty much"}) {
    r = run("run " + model + " --tokens \"1 7 9\" -n 5 " + flag);
    EXPECT_NE(r.exit_code, 0) << flag << ": " << r.output;
    EXPECT_NE(r.output.find(flag.substr(0, flag.find(' ')) + ": Value"), std::string::npos) << flag << ": " << r.output;
    EXPECT_EQ(r.output.find("decode:"), std::string::npos) << flag << " generated";
  }
  r = run("run " + model + " --tokens \"1 7 9\" -n 5 --logit-bias 7=-100 --logit-bias 12=2.5");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const auto& [bias, message] : {std::pair{"7", "\"7\" is not TOKEN_ID=BIAS"}, std::pair{"x=1", "\"x=1\" is not TOKEN_ID=BIAS"},
                                      std::pair{"7=much", "\"7=much\" is not TOKEN_ID=BIAS"}, std::pair{"-3=1", "\"-3=1\" is not TOKEN_ID=BIAS"},
                                      std::pair{"7=101", "the logit bias of token 7 must be in [-100, 100]"},
                                      std::pair{"512=1", "logit bias for token 512, outside the vocabulary 0..511"}}) {
    r = run("run " + model + " --tokens \"1 7 9\" -n 5 --logit-bias " + bias);
    EXPECT_NE(r.exit_code, 0) << bias << ": " << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << bias << ": " << r.output;
    EXPECT_EQ(r.output.find("decode:"), std::string::npos) << bias << " generated";
  }

  // NUMA placement on a simulated two-node machine, from router statistics.
  std::string calibration;
  for (int i = 1; i < 200; ++i) calibration += std::to_string(i * 37 % 512) + " ";
  r = run("numa-plan " + model + " --tokens \"" + calibration + "\" --numa experts --numa-replicate-budget 1", "LACUNA_NUMA_SIMULATE=2 ");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 nodes (simulated on 1)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layer 1: experts"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("imbalance on the calibration routing"), std::string::npos) << r.output;
  r = run("numa-plan " + model + " --tokens \"" + calibration + "\" --numa auto --batch 1", "LACUNA_NUMA_SIMULATE=4 ");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layer 0: slices (batch 1 routes to"), std::string::npos) << r.output;
  r = run("numa-plan " + model + " --tokens \"1 2\" --numa nodes");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--numa: nodes not in {none,interleave,experts,slices,auto}"), std::string::npos) << r.output;
  // Run placed: the same logits file, byte for byte, with the placement told on stderr.
  const std::string placed_logits = temp_path("placed.f32");
  std::ofstream(temp_path("calib.txt")) << "The night train to the coast ran late.";
  r = run("logits " + model + " --tokens \"1 7 9 300\" --out " + placed_logits + " --numa experts --numa-replicate-budget 1 --numa-calib " +
              temp_path("calib.txt"),
          "LACUNA_NUMA_SIMULATE=2 ");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("numa: experts on 2 nodes (simulated on 1)"), std::string::npos) << r.output;
  auto bytes_of = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  EXPECT_EQ(bytes_of(placed_logits), bytes_of(logits));
  r = run("run " + model + " --tokens \"1 7 9\" -n 5 --numa slices", "LACUNA_NUMA_SIMULATE=4 ");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("numa: slices on 4 nodes"), std::string::npos) << r.output;
  r = run("run " + model + " --tokens \"1 7 9\" -n 5 --numa experts --numa-calib " + temp_path("no-such-file"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot read the NUMA calibration text"), std::string::npos) << r.output;
  r = run("numa-plan " + model + " --tokens \"1 2\"", "LACUNA_NUMA_SIMULATE=two ");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("LACUNA_NUMA_SIMULATE=two: expected a node count"), std::string::npos) << r.output;

  // Bad input: a clear message and exit code 1, never a crash.
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"numa-plan " + model, "give calibration text"},
           {"run " + model + " --tokens \"1 512\" -n 2", "token id 512 is outside the vocabulary"},
           {"run " + model + " --tokens \"1 x\" -n 2", "\"x\" is not a token id"},
           {"run " + model + " --tokens \"1 2\" -n 100000", "exceeds the model's context"},
           {"logits " + dir + "/config.json --tokens 1 --out " + logits, "config.json"},
           {"convert " + temp_path("nowhere") + " " + model, "config.json: missing"},
           {"convert " + dir + " " + temp_path("csr8-int8.lacuna") + " --sparsity 0.9 --dtype int8 --format csr8",
            "csr8 has small-batch kernels for bf16 weights only, not int8"},
       }) {
    r = run(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  }
  std::ofstream(dir + "/config.json") << "{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": ";
  r = run("convert " + dir + " " + model);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("malformed JSON"), std::string::npos) << r.output;
}

// Wanda through the tool on the committed trained model, its refusals, and
// `bench quality` on a short text.
TEST(Cli, WandaConvertPerplexityAndQualityBench) {
  const std::string fixture = std::string(LACUNA_FIXTURES_DIR) + "/kjv-moe", model = temp_path("wanda.lacuna");
  const std::string calib = fixture + "/calibration.txt";
  CliRun r = run("convert " + fixture + " " + model + " --sparsity 0.5 --layer-sparsity 3=0.7 --prune wanda --calib " + calib +
                 " --calib-tokens 2048 --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("calibration: 2048 tokens of " + calib), std::string::npos) << r.output;
  // round(0.7 * 256) = 179 zeros of each down row in layer 3, round(0.5 * 256) = 128 in the others.
  EXPECT_NE(r.output.find("layers.3.expert.0.down                192x256 bitmap bf16  69.9% zeros"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layers.2.expert.0.down                192x256 bitmap bf16  50.0% zeros"), std::string::npos) << r.output;
  const std::string text = temp_path("text.txt");
  {
    std::ifstream held(fixture + "/heldout.txt");
    std::string part(6000, '\0');
    held.read(part.data(), static_cast<std::streamsize>(part.size()));
    std::ofstream(text) << part;
  }
  r = run("perplexity " + model + " " + text + " --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("perplexity "), std::string::npos) << r.output;

  const std::string empty = temp_path("empty.txt"), short_text = temp_path("short.txt");
  std::ofstream(empty).flush();
  std::ofstream(short_text) << "In the beginning God created the heaven and the earth.";
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"--sparsity 0.5 --prune wanda", "--prune wanda needs calibration text: --calib TEXT_FILE"},
           {"--sparsity 0.5 --prune wanda --calib " + empty, "calibration: the text is empty"},
           {"--sparsity 0.5 --prune wanda --calib " + short_text, "fewer than the 16384 asked for"},
           {"--sparsity 0.5 --prune wanda --calib " + temp_path("no-such.txt"), "cannot read the calibration text"},
           {"--sparsity 0.5 --calib " + calib, "--calib is for --prune wanda"},
           {"--layer-sparsity 2-x=0.5", "--layer-sparsity: \"2-x=0.5\" is not LAYER=SPARSITY"},
           {"--layer-sparsity 0.5", "is not LAYER=SPARSITY"},
           {"--layer-sparsity 9=0.5", "a sparsity is given for layer 9; the model has layers 0..3"},
           {"--layer-sparsity 1=nan", "the sparsity of layer 1 must be in [0, 1)"},
       }) {
    r = run("convert " + fixture + " " + model + " " + args + " --no-progress");
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  }
  r = run("perplexity " + model + " " + temp_path("no-such.txt"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot read the text"), std::string::npos) << r.output;

  const std::string csv = temp_path("quality.csv");
  r = run("bench quality " + fixture + " --sparsity 0,0.6 --prune magnitude,wanda --dtype bf16 --calib-tokens 1024 --decode-steps 3 --text " + text +
          " --csv " + csv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "prune,sparsity,dtype,perplexity,perplexity_vs_dense_bf16,decode_tokens_per_s,speedup_vs_dense_bf16,file_mb,magnitude_fallbacks");
  std::vector<std::string> points;
  while (std::getline(in, line)) points.push_back(line.substr(0, line.find(",bf16,") + 5));
  EXPECT_EQ(points, (std::vector<std::string>{"none,0,bf16", "magnitude,0.6,bf16", "wanda,0.6,bf16"}));
  r = run("bench quality " + fixture + " --prune random");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("unknown pruning method 'random'"), std::string::npos) << r.output;
}

// `lacuna serve` answers, and stops cleanly on SIGTERM; `lacuna batch`
// reports a failed line in its exit code and its output.
TEST(Cli, ServeStopsOnSigtermAndBatchReportsFailures) {
  const std::string dir = temp_path("serve-hf"), model = temp_path("serve.lacuna"), log = temp_path("serve.log");
  ASSERT_EQ(run("synth --arch mixtral --preset tiny " + dir).exit_code, 0);
  ASSERT_EQ(run("convert " + dir + " " + model).exit_code, 0);
  const std::string script = "bash -c '" + std::string(LACUNA_CLI_PATH) + " serve " + model + " --port 0 > " + log +
                             " 2>&1 & pid=$!; "
                             "for i in $(seq 100); do grep -q \"on http://\" " + log + " && break; sleep 0.1; done; "
                             "port=$(grep -o \"127.0.0.1:[0-9]*\" " + log + " | cut -d: -f2); "
                             "exec 3<>/dev/tcp/127.0.0.1/$port; printf \"GET /health HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3; "
                             "kill -TERM $pid; wait $pid; echo \"exit=$?\"; cat " + log + "' 2>&1";
  std::FILE* p = popen(script.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t got = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), got);
  pclose(p);
  EXPECT_NE(out.find("{\"status\":\"ok\"}"), std::string::npos) << out;
  EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
  EXPECT_NE(out.find("signal 15, shutting down"), std::string::npos) << out;
  EXPECT_NE(out.find("lacuna serve: stopped"), std::string::npos) << out;

  const std::string in = temp_path("batch.jsonl"), results = temp_path("batch-out.jsonl");
  {
    std::ofstream f(in);
    f << "{\"id\": \"good\", \"prompt\": [1, 2, 3], \"max_tokens\": 3}\n{\"id\": \"bad\", \"prompt\": [1, 2, 3], \"max_tokens\": 0}\n";
  }
  const CliRun b = run("batch " + model + " " + in + " " + results);
  EXPECT_EQ(b.exit_code, 3) << b.output;
  EXPECT_NE(b.output.find("2 lines: 0 done before, 1 succeeded, 1 failed"), std::string::npos) << b.output;
  const CliRun again = run("batch " + model + " " + in + " " + results);
  EXPECT_NE(again.output.find("2 done before"), std::string::npos) << again.output;
}

// The load test over rounds: every level once per round, a CSV row per
// level and round, every streamed answer equal to the single-client one.
TEST(Cli, BenchServeRunsEveryLevelInEachRound) {
  const std::string dir = temp_path("bench-serve-hf"), model = temp_path("bench-serve.lacuna"), csv = temp_path("bench-serve.csv");
  ASSERT_EQ(run("synth --arch mixtral --preset tiny " + dir).exit_code, 0);
  ASSERT_EQ(run("convert " + dir + " " + model + " --sparsity 0.7").exit_code, 0);
  const CliRun r = run("bench serve " + model + " --concurrency 1,3 --rounds 2 --max-tokens 4 --requests 6 --csv " + csv);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("throughput at 3 clients / at 1:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("median of the rounds' ratios"), std::string::npos) << r.output;
  std::ifstream in(csv);
  std::string header;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("model,round,concurrency,requests,lost,wrong,", 0), 0u) << header;
  EXPECT_NE(header.find(",decode_only_steps,decode_only_seconds,decode_step_p50_s,prompt_steps,prompt_step_seconds,prompt_tokens"), std::string::npos)
      << header;
  std::vector<std::string> seen;
  for (std::string line; std::getline(in, line);) {
    const std::vector<std::string> f = csv_fields(line);
    ASSERT_EQ(f.size(), 20u) << line;
    seen.push_back(f[1] + "/" + f[2]);
    EXPECT_EQ(f[3], "6") << line;  // requests
    EXPECT_EQ(f[4], "0") << line;  // lost
    EXPECT_EQ(f[5], "0") << line;  // wrong
    // Every prompt was asked once for the reference answers, so each request
    // starts from its prompt's first block (16 of 32 tokens), published then,
    // and the steps of its level evaluate the other 16 once (no preemption
    // here); its 4 tokens took decode-only steps besides.
    EXPECT_EQ(f[19], "96") << line;
    EXPECT_GE(std::stoi(f[14]), 3) << line;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"1/1", "1/3", "2/1", "2/3"}));
  for (const std::string rounds : {"0", "101", "two"}) {
    const CliRun bad = run("bench serve " + model + " --rounds " + rounds);
    EXPECT_NE(bad.exit_code, 0) << rounds << ": " << bad.output;
    EXPECT_NE(bad.output.find("--rounds: Value " + rounds + " not in range 1 to 100"), std::string::npos) << bad.output;
    EXPECT_EQ(bad.output.find("load:"), std::string::npos) << rounds << " started the load test";
  }
  // The server's step budget: 8 prompt tokens a step puts each 32-token prompt,
  // evaluated whole without prefix reuse, over 4 steps.
  const CliRun small_steps = run("bench serve " + model + " --concurrency 1 --max-tokens 2 --requests 2 --step-tokens 8 --no-prefix-reuse --csv " + csv);
  ASSERT_EQ(small_steps.exit_code, 0) << small_steps.output;
  std::ifstream small_csv(csv);
  std::string small_header, small_row;
  std::getline(small_csv, small_header);
  std::getline(small_csv, small_row);
  const std::vector<std::string> small_fields = csv_fields(small_row);
  ASSERT_EQ(small_fields.size(), 20u) << small_row;
  EXPECT_EQ(small_fields[17], "8") << small_row;   // prompt_steps
  EXPECT_EQ(small_fields[19], "64") << small_row;  // prompt_tokens
  for (const std::string steps : {"0", "65537", "many"}) {
    const CliRun bad = run("bench serve " + model + " --step-tokens " + steps);
    EXPECT_NE(bad.exit_code, 0) << steps << ": " << bad.output;
    EXPECT_NE(bad.output.find("--step-tokens"), std::string::npos) << bad.output;
    EXPECT_EQ(bad.output.find("load:"), std::string::npos) << steps << " started the load test";
  }
  // The server's KV cache type: f16 unless asked for f32, and nothing else.
  EXPECT_NE(r.output.find("KV cache f16"), std::string::npos) << r.output;
  const CliRun f32 = run("bench serve " + model + " --concurrency 1 --max-tokens 2 --requests 2 --kv-type f32");
  ASSERT_EQ(f32.exit_code, 0) << f32.output;
  EXPECT_NE(f32.output.find("KV cache f32"), std::string::npos) << f32.output;
  EXPECT_NE(f32.output.find(" 0      0 "), std::string::npos) << f32.output;  // none lost, none wrong
  const CliRun bad_kv = run("bench serve " + model + " --kv-type bf16");
  EXPECT_NE(bad_kv.exit_code, 0) << bad_kv.output;
  EXPECT_NE(bad_kv.output.find("--kv-type"), std::string::npos) << bad_kv.output;
  EXPECT_EQ(bad_kv.output.find("load:"), std::string::npos) << "bf16 started the load test";
  EXPECT_NE(r.output.find("gathering arrivals 1000 us"), std::string::npos) << r.output;
  for (const std::string gather : {"-1", "1000001", "soon"}) {
    const CliRun bad = run("bench serve " + model + " --gather-us " + gather);
    EXPECT_NE(bad.exit_code, 0) << gather << ": " << bad.output;
    EXPECT_NE(bad.output.find("--gather-us"), std::string::npos) << bad.output;
    EXPECT_EQ(bad.output.find("load:"), std::string::npos) << gather << " started the load test";
  }
}

// The model benchmark end to end on the tiny preset: one CSV row per model,
// batch and phase, and the byte ratio (dense bf16's weight bytes per decoded
// token over the model's): 1 for the baseline itself; for 70 % bitmap weights
// above 1 and below what the pruned weights alone allow (2 bytes against
// 0.725 for bf16, 0.425 for int8: the output projection stays dense). With
// --output-dtype int8, the bf16 model's output projection is int8: its ratio
// rises, still below the int8 model's.
TEST(Cli, BenchModelReportsEachPointAndItsByteRatio) {
  const std::string dir = temp_path("bench-model");
  const CliRun bad = run("bench model --preset tiny --work-dir " + dir + " --output-dtype bf8");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("--output-dtype: bf8 not in"), std::string::npos) << bad.output;
  EXPECT_EQ(bad.output.find("memory read bandwidth"), std::string::npos) << "a bad --output-dtype started the benchmark";
  std::map<std::string, double> ratio;  // label -> byte ratio
  std::map<std::string, std::string> output_dtype;  // label -> output_dtype column
  size_t rows = 0;
  const CliRun no_rounds = run("bench model --preset tiny --work-dir " + dir + " --rounds 0");
  EXPECT_NE(no_rounds.exit_code, 0) << no_rounds.output;
  EXPECT_NE(no_rounds.output.find("--rounds: Value 0 not in range"), std::string::npos) << no_rounds.output;
  for (const std::string options : {"--dtypes bf16,int8", "--dtypes bf16 --output-dtype int8 --rounds 3"}) {
    const std::string csv = temp_path("bench-model.csv");
    const CliRun r = run("bench model --preset tiny --work-dir " + dir + " --sparsity 0.7 --batch 1,4 --prompt 16 --repetitions 1 --decode-steps 2 " +
                         options + " --csv " + csv);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("byte ratio"), std::string::npos) << r.output;
    const bool rounds = options.find("--rounds 3") != std::string::npos;
    EXPECT_EQ(r.output.find("then the median over 3 such processes") != std::string::npos, rounds) << r.output;
    std::ifstream in(csv);
    std::string header;
    std::getline(in, header);
    EXPECT_EQ(header,
              "model,sparsity,dtype,batch,phase,tokens_per_s,speedup_vs_dense,peak_rss_mb,pct_bandwidth_limit,byte_ratio_vs_dense,label,output_dtype");
    for (std::string line; std::getline(in, line); ++rows) {
      const std::vector<std::string> f = csv_fields(line);
      ASSERT_EQ(f.size(), 12u) << line;
      EXPECT_GT(std::stod(f[5]), 0) << line;
      const double byte_ratio = std::stod(f[9]);
      output_dtype[f[10]] = f[11];
      const auto [known, fresh] = ratio.emplace(f[10], byte_ratio);
      EXPECT_EQ(known->second, byte_ratio) << "one model, one ratio: " << line;
    }
  }
  EXPECT_EQ(rows, 5u * 3u);  // the baseline twice and three models: decode at two batch sizes, prefill
  ASSERT_EQ(ratio.size(), 4u);
  EXPECT_DOUBLE_EQ(ratio["dense bf16 (oneDNN)"], 1.0);
  EXPECT_GT(ratio["70% bf16 auto"], 1.2);
  EXPECT_LT(ratio["70% bf16 auto"], 2.0 / 0.725);
  EXPECT_GT(ratio["70% int8 auto"], ratio["70% bf16 auto"]);
  EXPECT_LT(ratio["70% int8 auto"], 2.0 / 0.425);
  EXPECT_GT(ratio["70% bf16 auto (output int8)"], ratio["70% bf16 auto"]);
  EXPECT_LT(ratio["70% bf16 auto (output int8)"], ratio["70% int8 auto"]);
  EXPECT_EQ(output_dtype["dense bf16 (oneDNN)"], "bf16");
  EXPECT_EQ(output_dtype["70% bf16 auto"], "bf16");
  EXPECT_EQ(output_dtype["70% int8 auto"], "int8");
  EXPECT_EQ(output_dtype["70% bf16 auto (output int8)"], "int8");
}

}  // namespace
}  // namespace lacuna
