// See conv_i8_panel_cache.h.
#include "conv_i8_panel_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace qpart {
namespace glue {

ConvI8PanelCache& ConvI8PanelCache::instance() {
  static ConvI8PanelCache cache;
  return cache;
}

ConvI8PanelCache::ConvI8PanelCache() {
  int64_t mb = 128;
  if (const char* env = std::getenv("QPART_CONV_I8_CACHE_MB")) mb = std::max(0L, std::atol(env));
  budget_ = static_cast<size_t>(mb) << 20;
}

std::shared_ptr<const ConvI8PanelCache::Entry> ConvI8PanelCache::get(
    const Key& key, const uint8_t* packed, size_t bytes, const uint8_t* extra, size_t extra_bytes,
    size_t panel_bytes, const std::function<void(uint8_t*)>& build,
    const std::function<bool(const uint8_t*, const uint8_t*, size_t)>& equal) {
  const size_t identity = bytes + extra_bytes, cost = identity + panel_bytes;
  // An entry's identity bytes: the codes, then the extra bytes.
  auto same = [&](const Entry& e, bool split) {
    return e.packed.size() == identity &&
           (extra_bytes == 0 || std::memcmp(e.packed.data() + bytes, extra, extra_bytes) == 0) &&
           (split ? equal(e.packed.data(), packed, bytes)
                  : std::memcmp(e.packed.data(), packed, bytes) == 0);
  };
  if (cost <= budget_) {
    // Candidates under the lock, the byte comparison outside it (held entries stay valid).
    std::vector<std::shared_ptr<Entry>> candidates;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& e : entries_)
        if (e->key == key && e->packed.size() == identity) candidates.push_back(e);
    }
    for (const auto& e : candidates) {
      if (same(*e, true)) {
        std::lock_guard<std::mutex> lock(mutex_);
        e->last_use = ++clock_;
        return e;
      }
    }
  }
  auto entry = std::make_shared<Entry>();
  entry->key = key;
  entry->panel.resize(panel_bytes);
  build(entry->panel.data());
  if (cost > budget_) return entry;
  entry->packed.reserve(identity);
  entry->packed.assign(packed, packed + bytes);
  if (extra_bytes > 0) entry->packed.insert(entry->packed.end(), extra, extra + extra_bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  entry->last_use = ++clock_;
  // Drop a twin another thread inserted meanwhile, then the least recently used entries
  // until the new one fits. (Entries of the same key with other bytes stay: layers of equal
  // shape share a key; a weight updated in place ages out.)
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const std::shared_ptr<Entry>& e) {
                                  const bool twin = e->key == key && same(*e, false);
                                  if (twin) used_ -= e->packed.size() + e->panel.size();
                                  return twin;
                                }),
                 entries_.end());
  while (used_ + cost > budget_ && !entries_.empty()) {
    auto oldest =
        std::min_element(entries_.begin(), entries_.end(),
                         [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    used_ -= (*oldest)->packed.size() + (*oldest)->panel.size();
    entries_.erase(oldest);
  }
  used_ += cost;
  entries_.push_back(entry);
  return entry;
}

}  // namespace glue
}  // namespace qpart
