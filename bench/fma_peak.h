// hapi-bench-gmacs's fp32 FMA peak for one thread (bench/fma_peak.cc): many
// independent accumulator chains of vector FMAs, so that neither the FMA
// latency nor a dependency limits the rate, only the FMA units and the clock;
// and the clock itself, from a chain of dependent adds.
#pragma once

#include <cstdint>

namespace hapi::bench {

// Runs `iterations` x kFmaChains vector FMAs (16 fp32 lanes with AVX-512F,
// 8 with AVX2) on independent accumulators; returns a value derived from all
// of them so that the compiler keeps the work. Call only where the CPU has the
// instruction set (the caller reads /proc/cpuinfo's flags).
constexpr int kFmaChainsAvx512 = 16;  // of 32 zmm registers
constexpr int kFmaChainsAvx2 = 12;    // of 16 ymm registers
float FmaChainsAvx512(int64_t iterations);
float FmaChainsAvx2(int64_t iterations);

// The core clock, measured: `iterations` x kAddChain register-register integer
// adds, each depending on the previous one (latency 1 cycle on every x86 core
// of the last decade, and not eliminated at rename as adds of an immediate
// can be), so cycles = iterations x kAddChain. Returns a value of the chain.
constexpr int kAddChain = 64;
uint64_t DependentAdds(int64_t iterations);

}  // namespace hapi::bench
