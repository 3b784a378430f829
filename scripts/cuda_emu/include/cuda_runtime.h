// CPU emulation of the small part of the CUDA programming model polyfit's kernels use, so that
// csrc/cuda/*.cu can be compiled by a host compiler and executed without a GPU: every block runs
// its threads as real std::threads (so __syncthreads, __syncwarp and warp shuffles are real
// barriers and races stay races), blocks one after another. Only for testing the kernels' logic.
#pragma once

#include <barrier>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

typedef void* cudaStream_t;
typedef int cudaError_t;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
constexpr cudaError_t cudaSuccess = 0;

namespace emu {
struct Dim3 {
  unsigned x = 0, y = 1, z = 1;
};
struct Block {
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<uint64_t> lanes;  // shuffle exchange
  unsigned char* smem = nullptr;
};
inline thread_local Dim3 thread_idx, block_idx, block_dim, grid_dim;
inline thread_local Block* block = nullptr;
inline int sm_count = 3;  // small, so that grid-stride loops take several turns
}  // namespace emu

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = emu::sm_count;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
inline T max(T a, T b) {
  return a < b ? b : a;
}

inline void __syncthreads() { emu::block->all->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::block->warps[threadIdx.x / 32]->arrive_and_wait(); }

template <typename T>
inline T __shfl_down_sync(unsigned, T v, int off) {
  static_assert(sizeof(T) <= 8, "");
  const unsigned tid = threadIdx.x, w = tid / 32, lane = tid % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  emu::block->lanes[tid] = bits;
  emu::block->warps[w]->arrive_and_wait();
  T r = v;
  if (lane + off < 32 && tid + off < blockDim.x) std::memcpy(&r, &emu::block->lanes[tid + off], sizeof(T));
  emu::block->warps[w]->arrive_and_wait();
  return r;
}

namespace emu {
// A fixed crew of host threads plays the threads of one block at a time (creating 256 threads per
// block per launch would dominate the run time).
class Crew {
 public:
  static Crew& get() {
    static Crew* crew = new Crew;  // never destroyed: its threads outlive main
    return *crew;
  }
  void run(unsigned threads, const std::function<void(unsigned)>& body) {
    std::unique_lock<std::mutex> lk(mu_);
    while (workers_.size() < threads) {
      const unsigned id = static_cast<unsigned>(workers_.size());
      workers_.emplace_back([this, id] { loop(id); });
    }
    body_ = &body;
    active_ = threads;
    pending_ = threads;
    ++generation_;
    go_.notify_all();
    done_.wait(lk, [this] { return pending_ == 0; });
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void loop(unsigned id) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(unsigned)>* body;
      {
        std::unique_lock<std::mutex> lk(mu_);
        go_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (id >= active_) continue;
        body = body_;
      }
      try {
        (*body)(id);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable go_, done_;
  std::vector<std::thread> workers_;  // never joined: they live as long as the process
  const std::function<void(unsigned)>* body_ = nullptr;
  unsigned active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
};

// kernel<<<grid, threads, smem, stream>>>(args...) becomes emu::launch(kernel, grid, threads, smem, stream, args...)
template <typename... P, typename... A>
void launch(void (*kernel)(P...), unsigned grid, unsigned threads, size_t smem, cudaStream_t, A&&... args) {
  if (grid == 0 || threads == 0 || threads > 1024) throw std::runtime_error("emu: bad launch configuration");
  if (smem > 48 * 1024) throw std::runtime_error("emu: more than 48 KiB of dynamic shared memory");
  for (unsigned b = 0; b < grid; ++b) {
    Block blk;
    blk.all = std::make_unique<std::barrier<>>(threads);
    for (unsigned w = 0; w * 32 < threads; ++w)
      blk.warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - w * 32)));
    blk.lanes.assign(threads, 0);
    std::vector<unsigned char> sm(smem + 16, 0xff);  // uninitialised shared memory reads as NaN
    blk.smem = sm.data();
    const std::function<void(unsigned)> body = [&](unsigned t) {
      thread_idx.x = t;
      block_idx.x = b;
      block_dim.x = threads;
      grid_dim.x = grid;
      block = &blk;
      kernel(args...);
      blk.warps[t / 32]->arrive_and_drop();  // an exited thread no longer holds barriers up
      blk.all->arrive_and_drop();
    };
    Crew::get().run(threads, body);
  }
}
}  // namespace emu
