// See output_pool.h.
#include "output_pool.h"

#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/Storage.h>

#include <algorithm>
#include <iterator>
#include <new>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#if defined(__linux__)
#include <unistd.h>
#endif

namespace qpart {
namespace glue {
namespace {

constexpr size_t kAlign = 64;

class OutputPool final : public c10::Allocator {
 public:
  static OutputPool& instance() {
    static OutputPool* pool = new OutputPool();  // never destroyed: tensors may outlive exit
    return *pool;
  }

  bool enabled() const { return cap_ > 0; }

  c10::DataPtr allocate(size_t n) override {
    void* p = take(n);
    if (p == nullptr) {
      const size_t bytes = (std::max<size_t>(n, 1) + kAlign - 1) / kAlign * kAlign;
      p = std::aligned_alloc(kAlign, bytes);
      if (p == nullptr) throw std::bad_alloc();
      std::lock_guard<std::mutex> lock(mutex_);
      live_[p] = bytes;
    }
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  size_t free_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return free_bytes_;
  }

  size_t cap_bytes() const { return cap_; }  // fixed at construction

 private:
  OutputPool() {
    long mb = default_cap_mb();
    if (const char* env = std::getenv("QPART_OUTPUT_POOL_MB")) mb = std::max(0L, std::atol(env));
    cap_ = static_cast<size_t>(mb) << 20;
  }

  // A sixteenth of the machine's memory, within [256 MiB, 1 GiB]: a ResNet-18 forward at batch
  // 32 cycles through ~290 MB of activations, which a fixed 256 MiB cap kept returning to the
  // system (11 % of its time in page faults), while a small device keeps the old cap.
  static long default_cap_mb() {
    long mb = 256;
#if defined(__linux__)
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0)
      mb = static_cast<long>((static_cast<double>(pages) * page) / 16.0 / (1 << 20));
#endif
    return std::clamp(mb, 256L, 1024L);
  }

  // A free block of at least n bytes and at most n + n / 8 (the smallest such), or null.
  void* take(size_t n) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(n);
    if (it == free_.end() || it->first > n + n / 8) return nullptr;
    void* p = it->second;
    free_bytes_ -= it->first;
    free_.erase(it);
    return p;
  }

  static void release(void* p) { instance().give(p); }

  // Keeps a freed block while the free bytes stay under the cap (dropping the largest blocks
  // first to make room), else returns it to the system.
  void give(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t bytes = live_.at(p);
    while (free_bytes_ + bytes > cap_ && !free_.empty() && std::prev(free_.end())->first >= bytes) {
      auto largest = std::prev(free_.end());
      free_bytes_ -= largest->first;
      live_.erase(largest->second);
      std::free(largest->second);
      free_.erase(largest);
    }
    if (free_bytes_ + bytes > cap_) {
      live_.erase(p);
      std::free(p);
      return;
    }
    free_.emplace(bytes, p);
    free_bytes_ += bytes;
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;       // size -> block
  std::unordered_map<void*, size_t> live_;  // every block this pool allocated -> size
  size_t free_bytes_ = 0, cap_ = 0;
};

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  OutputPool& pool = OutputPool::instance();
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t nbytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (!pool.enabled() || nbytes < kPooledMinBytes) return at::empty(sizes, options);
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, &pool, /*resizable=*/true);
  return at::empty({0}, options).set_(storage, 0, sizes);
}

size_t output_pool_free_bytes() { return OutputPool::instance().free_bytes(); }

size_t output_pool_cap_bytes() { return OutputPool::instance().cap_bytes(); }

}  // namespace glue
}  // namespace qpart
