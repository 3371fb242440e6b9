// Internal: the software-prefetch stream of the small-batch (GEMV-style) kernels. The NR
// weight rows of a tile are adjacent in the packed buffer, so a thread walking its tiles in
// order reads one contiguous stream; while a tile is multiplied, the same fraction of the
// bytes `ahead` further on (about the next tile) is requested, one prefetch per 64-byte line,
// in address order. ISA-neutral (__builtin_prefetch); header-only, internal linkage.
#pragma once

#include <cstdint>

namespace qpart {
namespace kernels {
namespace detail {
namespace {  // internal linkage: compiled per translation unit

/// Least prefetch distance in bytes (one tile when tiles are larger).
constexpr int64_t kPrefetchAhead = 2048;

/// One sequential software-prefetch stream over the packed buffer: lines are requested in
/// address order, each once, up to `limit` (the buffer's end; prefetches never fault, but none
/// is issued past it).
struct TilePrefetch {
  const uint8_t* next;   // next line to request
  const uint8_t* limit;  // end of the packed buffer

  /// Requests every line below `target` (clamped to the buffer) not yet requested.
  inline void upto(const uint8_t* target) {
    if (target > limit) target = limit;
    for (; next < target; next += 64) __builtin_prefetch(next, 0, 3);
  }

  /// Where the stream should have reached when each row of the tile of `nr` rows starting at
  /// `tile` (rows of `row_bytes`) has been read up to byte `done`: the same share of the bytes
  /// max(nr * row_bytes, kPrefetchAhead) further on.
  static inline const uint8_t* target(const uint8_t* tile, int64_t nr, int64_t row_bytes,
                                      int64_t done) {
    const int64_t ahead = nr * row_bytes > kPrefetchAhead ? nr * row_bytes : kPrefetchAhead;
    return tile + ahead + done * nr;
  }
};

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
