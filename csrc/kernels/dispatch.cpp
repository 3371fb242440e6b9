// Run-time CPU ISA selection (see qpart_kernels.h). The choice is made once, lazily, from
// CPU feature detection and the QPART_CPU_ISA environment variable; set_cpu_isa overrides it.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dispatch.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace {

#if defined(__x86_64__)
bool cpu_has_avx2_fma() {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_cpu_init();
  // F16C (vcvtph2ps) is used by the integer path; every AVX2 CPU has it.
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// The AVX-512 kernels use VNNI (vpdpbusd) and VBMI (vpermb, vpmultishiftqb) on top of F/BW/VL;
// the OS must also save the ZMM state (checked by the compiler runtime's cpu model).
bool cpu_has_avx512_kernels() {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}
#endif

std::atomic<int>& isa_state() {
  static std::atomic<int> state{-1};  // -1: not chosen yet
  return state;
}

CpuIsa initial_isa() {
  const CpuIsa best = best_cpu_isa();
  const char* env = std::getenv("QPART_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  CpuIsa requested;
  if (!parse_cpu_isa(env, &requested)) {
    std::fprintf(stderr, "qpart: ignoring unknown QPART_CPU_ISA='%s' (scalar|avx2|avx512|neon|auto); "
                 "using %s\n", env, cpu_isa_name(best));
    return best;
  }
  if (!cpu_isa_supported(requested)) {
    std::fprintf(stderr, "qpart: QPART_CPU_ISA=%s is not supported by this CPU/build; using %s\n",
                 env, cpu_isa_name(best));
    return best;
  }
  return requested;
}

}  // namespace

bool cpu_isa_supported(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return true;
    case CpuIsa::kAvx2: {
#if defined(__x86_64__)
      static const bool ok = cpu_has_avx2_fma();
      return ok;
#else
      return false;
#endif
    }
    case CpuIsa::kAvx512: {
#if defined(__x86_64__)
      static const bool ok = cpu_has_avx512_kernels();
      return ok;
#else
      return false;
#endif
    }
    case CpuIsa::kNeon:
#if defined(__aarch64__)
      return true;
#else
      return false;
#endif
  }
  return false;
}

CpuIsa best_cpu_isa() {
  if (cpu_isa_supported(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
  if (cpu_isa_supported(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
  if (cpu_isa_supported(CpuIsa::kNeon)) return CpuIsa::kNeon;
  return CpuIsa::kScalar;
}

CpuIsa active_cpu_isa() {
  int v = isa_state().load(std::memory_order_relaxed);
  if (v < 0) {
    int expected = -1;
    isa_state().compare_exchange_strong(expected, static_cast<int>(initial_isa()));
    v = isa_state().load(std::memory_order_relaxed);
  }
  return static_cast<CpuIsa>(v);
}

bool set_cpu_isa(CpuIsa isa) {
  if (!cpu_isa_supported(isa)) return false;
  isa_state().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar: return "scalar";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kNeon: return "neon";
  }
  return "unknown";
}

bool parse_cpu_isa(const char* name, CpuIsa* isa) {
  if (name == nullptr) return false;
  if (std::strcmp(name, "scalar") == 0) *isa = CpuIsa::kScalar;
  else if (std::strcmp(name, "avx2") == 0) *isa = CpuIsa::kAvx2;
  else if (std::strcmp(name, "avx512") == 0) *isa = CpuIsa::kAvx512;
  else if (std::strcmp(name, "neon") == 0) *isa = CpuIsa::kNeon;
  else if (std::strcmp(name, "auto") == 0) *isa = best_cpu_isa();
  else return false;
  return true;
}

}  // namespace kernels
}  // namespace qpart
