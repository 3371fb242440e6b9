// Dense LSB-first bit packing of b-bit codes, one independent bit stream per row.
#include <cstring>

#include "packed_code.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {

void pack_rows(const uint8_t* codes, int64_t rows, int64_t k, int bits, uint8_t* packed) {
  const int64_t row_bytes = packed_row_bytes(k, bits);
  const unsigned mask = static_cast<unsigned>(max_code(bits));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes + r * k;
    uint8_t* dst = packed + r * row_bytes;
    std::memset(dst, 0, static_cast<size_t>(row_bytes));
    for (int64_t j = 0; j < k; ++j) {
      const int64_t bit = j * bits;
      const int64_t byte = bit >> 3;
      const unsigned shift = static_cast<unsigned>(bit & 7);
      const unsigned value = (src[j] & mask) << shift;  // spans at most two bytes
      dst[byte] |= static_cast<uint8_t>(value);
      if (shift + bits > 8) dst[byte + 1] |= static_cast<uint8_t>(value >> 8);
    }
  }
}

void unpack_rows(const uint8_t* packed, int64_t rows, int64_t k, int bits, uint8_t* codes) {
  const int64_t row_bytes = packed_row_bytes(k, bits);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = packed + r * row_bytes;
    uint8_t* dst = codes + r * k;
    for (int64_t j = 0; j < k; ++j) dst[j] = static_cast<uint8_t>(detail::code_at(src, j, bits));
  }
}

}  // namespace kernels
}  // namespace qpart
