#include "output_cache.h"

#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <list>
#include <mutex>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sys/mman.h>
#define POLYFIT_MAPS_OUTPUTS 1
#endif

namespace polyfit::cpu {
namespace {

// Outputs from 2 MB up, in whole 2 MB blocks aligned to 2 MB: a transparent huge page each where
// the OS offers them. Below that torch's allocator serves (glibc's heap reuses small blocks).
constexpr size_t kMinBytes = size_t(2) << 20;
constexpr size_t kGrain = size_t(2) << 20;
// A kept block serves a request up to a quarter smaller than itself, no smaller.
constexpr size_t kSlackDivisor = 4;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The size of a transparent huge page, 0 where the OS offers none (read once).
size_t huge_page_bytes() {
  static const size_t bytes = [] {
    size_t b = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    std::ifstream("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") >> b;
#endif
    return b;
  }();
  return bytes;
}

// With nothing kept (capacity 0), a large output from torch's allocator is still offered huge pages
// before anything touches it, as numpy does for its arrays: the OS then hands fresh memory over 2 MB
// at a time instead of 4 KB at a time, a fault each (most of a features call whose 36 MB output came
// fresh from the OS). Only advice: where it is refused or the memory is already mapped, nothing changes.
c10::DataPtr advise_huge_pages(c10::DataPtr p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const size_t huge = huge_page_bytes();
  if (huge > 0 && bytes >= 2 * huge) {
    const auto begin = reinterpret_cast<uintptr_t>(p.get());
    const uintptr_t lo = round_up(begin, huge), hi = (begin + bytes) / huge * huge;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
#endif
  return p;
}

// The capacity POLYFIT_CPU_CACHE_MB asks for (default 256 MB); an invalid value gives an error message
// instead, raised by the first call that needs the capacity (not at load, where it would abort).
size_t initial_capacity(std::string& error) {
  const char* env = std::getenv("POLYFIT_CPU_CACHE_MB");
  if (env == nullptr || *env == '\0') return size_t(256) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(env, &end, 10);
  if (end != env && *end == '\0' && mb >= 0 && mb < (1LL << 40)) return size_t(mb) << 20;
  error = std::string("POLYFIT_CPU_CACHE_MB must be a whole number of MB >= 0; got '") + env + "'";
  return 0;
}

struct Block {
  void* ptr;
  size_t bytes;      // mapped
  size_t requested;  // the tensor's bytes while one holds it
};

class OutputCache final : public c10::Allocator {
 public:
  static OutputCache& instance() {
    // Never destroyed: tensors may be freed after this library's statics during interpreter exit.
    static OutputCache* cache = [] {
      auto* c = new OutputCache();
#if defined(POLYFIT_MAPS_OUTPUTS)
      // A fork (DataLoader workers) while another thread holds the lock would leave the child's
      // copy locked forever: hold it across the fork instead.
      pthread_atfork([] { instance_lock().lock(); }, [] { instance_lock().unlock(); },
                     [] { instance_lock().unlock(); });
#endif
      return c;
    }();
    return *cache;
  }

  c10::DataPtr allocate(size_t n) override {
    Block* b = nullptr;
    if (n >= kMinBytes && capacity() > 0) {
      const size_t bytes = round_up(n, kGrain);
      b = take(bytes);
      if (b == nullptr) b = map(bytes);
    }
    if (b == nullptr) return advise_huge_pages(c10::GetCPUAllocator()->allocate(n), n);
    b->requested = n;
    live_ += n;
    report(b->ptr, static_cast<int64_t>(n));
    return {b->ptr, b, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  // Sets the capacity (bytes >= 0) and/or releases every kept block; returns {kept bytes, kept
  // blocks, capacity, reuses, new mappings}.
  std::vector<int64_t> control(int64_t capacity, bool release_all) {
    TORCH_CHECK_VALUE(env_error_.empty(), env_error_);
    std::vector<Block*> drop;
    std::vector<int64_t> info;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (capacity >= 0) capacity_ = static_cast<size_t>(capacity);
      evict_until(release_all ? 0 : capacity_, drop);
      info = {static_cast<int64_t>(kept_bytes_.load()), static_cast<int64_t>(kept_.size()), static_cast<int64_t>(capacity_),
              static_cast<int64_t>(reuses_), static_cast<int64_t>(mappings_)};
    }
    for (Block* b : drop) unmap(b);
    return info;
  }

 private:
  OutputCache() : capacity_(initial_capacity(env_error_)) {}
  static std::mutex& instance_lock() { return instance().mutex_; }

  size_t capacity() {
    TORCH_CHECK_VALUE(env_error_.empty(), env_error_);
    std::lock_guard<std::mutex> lock(mutex_);
    return capacity_;
  }

  // The smallest kept block that fits `bytes` with at most a quarter to spare, the most recently
  // freed among equals (its lines may still be in cache: two 68 MB blocks taken in turn made
  // features D = 16 at 10^6 points 2.1 -> 4.2-5.0 ms), taken from the keep.
  Block* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = kept_.rend();
    for (auto it = kept_.rbegin(); it != kept_.rend(); ++it)
      if ((*it)->bytes >= bytes && (*it)->bytes <= bytes + bytes / kSlackDivisor &&
          (best == kept_.rend() || (*it)->bytes < (*best)->bytes))
        best = it;
    if (best == kept_.rend()) return nullptr;
    Block* b = *best;
    kept_.erase(std::next(best).base());
    kept_bytes_ -= b->bytes;
    ++reuses_;
    return b;
  }

  // A tensor freed its block: kept (the oldest kept blocks make room) unless larger than the capacity.
  void put(Block* b) {
    live_ -= b->requested;
    report(b->ptr, -static_cast<int64_t>(b->requested));
    std::vector<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (b->bytes > capacity_) {
        drop.push_back(b);
      } else {
        evict_until(capacity_ - b->bytes, drop);
        kept_.push_back(b);
        kept_bytes_ += b->bytes;
      }
    }
    for (Block* d : drop) unmap(d);
  }

  static void release(void* ctx) { instance().put(static_cast<Block*>(ctx)); }

  // Oldest first, until at most `bytes` stay kept; the caller unmaps `drop` outside the lock.
  void evict_until(size_t bytes, std::vector<Block*>& drop) {
    while (kept_bytes_ > bytes) {
      drop.push_back(kept_.front());
      kept_bytes_ -= kept_.front()->bytes;
      kept_.pop_front();
    }
  }

  Block* map(size_t bytes) {
#if defined(POLYFIT_MAPS_OUTPUTS)
    // Over-map by one grain and trim, for a start aligned to the grain (a huge page can back it).
    char* raw = static_cast<char*>(
        mmap(nullptr, bytes + kGrain, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (raw == MAP_FAILED) return nullptr;  // torch's allocator then tries, and reports a failure its way
    char* start = reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(raw), kGrain));
    if (start > raw) munmap(raw, start - raw);
    if (raw + kGrain > start) munmap(start + bytes, raw + kGrain - start);
#if defined(MADV_HUGEPAGE)
    madvise(start, bytes, MADV_HUGEPAGE);  // advice only: refused, the pages come 4 KB at a time
#endif
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++mappings_;
    }
    return new Block{start, bytes, 0};
#else
    (void)bytes;
    return nullptr;
#endif
  }

  static void unmap(Block* b) {
#if defined(POLYFIT_MAPS_OUTPUTS)
    munmap(b->ptr, b->bytes);
#endif
    delete b;
  }

  // torch.profiler's memory events see these blocks as they see torch's own allocations.
  void report(void* ptr, int64_t delta) {
    if (c10::memoryProfilingEnabled())
      c10::reportMemoryUsageToProfiler(ptr, delta, live_.load(), live_.load() + kept_bytes_,
                                       c10::Device(c10::DeviceType::CPU));
  }

  std::string env_error_;  // set first: initial_capacity writes it
  std::mutex mutex_;
  std::list<Block*> kept_;  // oldest first
  std::atomic<size_t> kept_bytes_{0};  // written under the lock, read by report() outside it
  size_t capacity_;
  size_t reuses_ = 0, mappings_ = 0;
  std::atomic<size_t> live_{0};
};

}  // namespace

c10::Allocator* output_allocator() { return &OutputCache::instance(); }

}  // namespace polyfit::cpu

// polyfit.empty_cache(), cache_info(), set_cache_capacity() (polyfit/cache.py); capacity -1 keeps it.
TORCH_LIBRARY_FRAGMENT(polyfit, m) {
  m.def("_cpu_output_cache(int capacity=-1, bool release=False) -> int[]",
        [](int64_t capacity, bool release) { return polyfit::cpu::OutputCache::instance().control(capacity, release); });
}
