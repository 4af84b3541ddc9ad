// The FMA kernels and the clock loop of bench/fma_peak.h. Compiled with -mavx512f -mavx2 -mfma
// (bench/CMakeLists.txt): only these two loops live here, and the caller picks
// the one the CPU runs. Each iteration issues one FMA per chain; the chains
// (16 zmm, 12 ymm) exceed FMA latency x FMA units of current cores (4 cycles
// x 2 units = 8 in flight), so the loop runs at the FMA throughput.
#include "bench/fma_peak.h"

#include <immintrin.h>

namespace hapi::bench {

// acc = acc * a + b converges to b / (1 - a): no overflow, no denormals.
float FmaChainsAvx512(int64_t iterations) {
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-3f);
  __m512 acc[kFmaChainsAvx512];
  for (int c = 0; c < kFmaChainsAvx512; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kFmaChainsAvx512; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kFmaChainsAvx512; ++c) sum = _mm512_add_ps(sum, acc[c]);
  // (Not _mm512_reduce_add_ps: GCC 12 warns inside it, -Werror=uninitialized.)
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

float FmaChainsAvx2(int64_t iterations) {
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-3f);
  __m256 acc[kFmaChainsAvx2];
  for (int c = 0; c < kFmaChainsAvx2; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kFmaChainsAvx2; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 sum = acc[0];
  for (int c = 1; c < kFmaChainsAvx2; ++c) sum = _mm256_add_ps(sum, acc[c]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

uint64_t DependentAdds(int64_t iterations) {
  uint64_t x = 0, one = 1;
  for (int64_t i = 0; i < iterations; ++i) {
    // kAddChain = 64 dependent adds; the loop counter runs beside them.
#define HAPI_ADD4 "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
#define HAPI_ADD16 HAPI_ADD4 HAPI_ADD4 HAPI_ADD4 HAPI_ADD4
    asm volatile(HAPI_ADD16 HAPI_ADD16 HAPI_ADD16 HAPI_ADD16 : "+r"(x) : "r"(one));
#undef HAPI_ADD16
#undef HAPI_ADD4
  }
  return x;
}

}  // namespace hapi::bench
