// Run-time CPU ISA selection (see qpart_kernels.h) over the rows of the ISA table
// (isa_table.h): the active row is chosen once, on first use, from CPU feature detection and
// the QPART_CPU_ISA environment variable; set_cpu_isa swaps it. Nothing here names an ISA.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "isa_table.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace {

using detail::IsaKernels;

const IsaKernels* find_row(CpuIsa isa) {
  for (const IsaKernels& row : detail::isa_table())
    if (row.isa == isa) return &row;
  return nullptr;
}

bool row_supported(const IsaKernels& row) { return row.fn.supported && row.fn.supported(); }

const IsaKernels& best_row() {
  for (const IsaKernels& row : detail::isa_table())
    if (row_supported(row)) return row;
  return *find_row(CpuIsa::kScalar);  // unreachable: the scalar row is always supported
}

// "avx512|avx2|neon|scalar|auto"
std::string names(const char* sep) {
  std::string out;
  for (const IsaKernels& row : detail::isa_table()) (out += row.name) += sep;
  return out + "auto";
}

const IsaKernels& initial_row() {
  const IsaKernels& best = best_row();
  const char* env = std::getenv("QPART_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  CpuIsa requested;
  if (!parse_cpu_isa(env, &requested)) {
    std::fprintf(stderr, "qpart: ignoring unknown QPART_CPU_ISA='%s' (%s); using %s\n", env,
                 names("|").c_str(), best.name);
    return best;
  }
  const IsaKernels& row = detail::isa_kernels(requested);
  if (!row_supported(row)) {
    std::fprintf(stderr, "qpart: QPART_CPU_ISA=%s is not supported by this CPU/build; using %s\n",
                 env, best.name);
    return best;
  }
  return row;
}

std::atomic<const IsaKernels*>& active_row() {
  static std::atomic<const IsaKernels*> row{nullptr};  // null: not chosen yet
  return row;
}

}  // namespace

namespace detail {

const IsaKernels& isa_kernels(CpuIsa isa) {
  const IsaKernels* row = find_row(isa);
  return row ? *row : *find_row(CpuIsa::kScalar);
}

const IsaKernels& active_isa_kernels() {
  const IsaKernels* row = active_row().load(std::memory_order_relaxed);
  if (row == nullptr) {
    const IsaKernels* expected = nullptr;
    active_row().compare_exchange_strong(expected, &initial_row());
    row = active_row().load(std::memory_order_relaxed);
  }
  return *row;
}

}  // namespace detail

bool cpu_isa_supported(CpuIsa isa) {
  const IsaKernels* row = find_row(isa);
  return row != nullptr && row_supported(*row);
}

CpuIsa best_cpu_isa() { return best_row().isa; }

CpuIsa active_cpu_isa() { return detail::active_isa_kernels().isa; }

bool set_cpu_isa(CpuIsa isa) {
  const IsaKernels* row = find_row(isa);
  if (row == nullptr || !row_supported(*row)) return false;
  active_row().store(row, std::memory_order_relaxed);
  return true;
}

const char* cpu_isa_name(CpuIsa isa) {
  const IsaKernels* row = find_row(isa);
  return row ? row->name : "unknown";
}

bool parse_cpu_isa(const char* name, CpuIsa* isa) {
  if (name == nullptr) return false;
  if (std::strcmp(name, "auto") == 0) {
    *isa = best_cpu_isa();
    return true;
  }
  for (const IsaKernels& row : detail::isa_table()) {
    if (std::strcmp(name, row.name) == 0) {
      *isa = row.isa;
      return true;
    }
  }
  return false;
}

}  // namespace kernels
}  // namespace qpart
