#pragma once
// How many of each dot-product instruction one core retires per second,
// timed in a tight loop of twelve independent accumulator chains (enough to
// cover any of their latencies): the compute ceiling of code built on it.
// The rates decide between paths whose instruction mix differs by host: on
// this project's Intel host VDPBF16PS does half the multiply-adds per second
// of VFMADD231PS, so oneDNN's bf16 matmul runs at about half its f32 one's
// rate (docs/benchmarks.md, "Instruction rates").
namespace lacuna {

// Each needs the CPU feature of its instruction (avx512f; avx512_bf16;
// avx512_vnni): the caller checks cpu_info() first. `iterations` x 12
// instructions are timed.
double fma_zmm_per_second(long iterations);
double dpbf16_zmm_per_second(long iterations);
double dpbusd_zmm_per_second(long iterations);

// VDPBF16PS's multiply-adds per second over VFMADD231PS's (32 and 16 per
// instruction), the best of three alternated short timings (a few
// milliseconds), measured on the first call; 0 where the CPU lacks
// avx512_bf16 or avx512f. 0.47-0.51 on this project's Intel host; about 2
// expected on AMD Zen 4, which by its published figures issues both at one
// 512-bit instruction a cycle (not measured here). Far from 1 either way,
// so decisions made on it do not flip between runs. Thread-safe.
double bf16_dot_vs_fma();

// The decision made on it: f32 FMAs do more multiply-adds per second than
// VDPBF16PS here (bf16_dot_vs_fma() < 1), so oneDNN's f32 matmul outruns
// its bf16 one and a bf16 weight expanded for oneDNN is better widened to f32.
bool f32_outruns_bf16_dot();

}  // namespace lacuna
