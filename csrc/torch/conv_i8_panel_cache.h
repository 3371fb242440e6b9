// Process-wide cache of the integer conv2d's unpacked weight panels (torch-free).
//
// The direct integer kernels read the weights as a u8 panel that conv2d_i8_pack_weights builds
// from the packed rows on every call; for layers with few output pixels (ResNet's 7x7 stage)
// that costs a quarter of the convolution. The cache keeps the panel of recently seen weights,
// keyed by the panel's geometry and verified by *content*: an entry holds a copy of the packed
// bytes it was built from (plus any other bytes the panel depends on: the zero points of a
// zero-folded AMX panel) and is used only if they compare equal (memcmp) to the call's, so a
// hit gives exactly the panel a rebuild would (no staleness after in-place updates, freed and
// reused storage, etc.). Least recently used entries are dropped beyond the byte budget
// (QPART_CONV_I8_CACHE_MB, default 128; 0 disables the cache).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace qpart {
namespace glue {

class ConvI8PanelCache {
 public:
  /// (c_out, c_in / groups, kh, kw, bits, layout - 0 direct, 1 AMX, 2 AMX with the zero
  /// points folded in, 3 lanes): what a panel depends on besides its identity bytes.
  using Key = std::array<int64_t, 6>;

  struct Entry {
    Key key;
    std::vector<uint8_t> packed;  // the bytes the panel was built from (codes, then any extra)
    std::vector<uint8_t> panel;
    uint64_t last_use = 0;
  };

  static ConvI8PanelCache& instance();

  /// The panel of `packed` (`bytes` bytes) and `extra` (`extra_bytes` more bytes it depends
  /// on, e.g. folded zero points; may be 0): a cached one if an entry with this key holds the
  /// same bytes, else one built by `build(panel_ptr)` into `panel_bytes` bytes (and cached if
  /// it fits the budget). The entry stays valid while the returned pointer is held.
  /// `equal(a, b, n)` compares the n code bytes (the caller may split it across threads).
  std::shared_ptr<const Entry> get(
      const Key& key, const uint8_t* packed, size_t bytes, const uint8_t* extra, size_t extra_bytes,
      size_t panel_bytes, const std::function<void(uint8_t*)>& build,
      const std::function<bool(const uint8_t*, const uint8_t*, size_t)>& equal);

 private:
  ConvI8PanelCache();

  std::mutex mutex_;
  std::vector<std::shared_ptr<Entry>> entries_;
  size_t budget_ = 0, used_ = 0;
  uint64_t clock_ = 0;
};

}  // namespace glue
}  // namespace qpart
