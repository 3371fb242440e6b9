// Internal: scalar access to one code of a packed row (docs/FORMAT.md), shared by the
// portable packer and the tails of the SIMD kernels.
#pragma once

#include <cstdint>

namespace qpart {
namespace kernels {
namespace detail {
// Internal linkage on purpose: ISA-specific translation units include this under a
// `#pragma GCC target`, and each must keep its own copy (no ODR merging across ISAs).
namespace {

/// Code `j` of a packed row of `bits`-bit codes: stream bits [j*bits, (j+1)*bits), LSB first.
inline int code_at(const uint8_t* row, int64_t j, int bits) {
  const int64_t bit = j * bits;
  const int64_t byte = bit >> 3;
  const unsigned shift = static_cast<unsigned>(bit & 7);
  unsigned window = row[byte];
  if (shift + bits > 8) window |= static_cast<unsigned>(row[byte + 1]) << 8;
  return static_cast<int>((window >> shift) & ((1u << bits) - 1));
}

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
