// Memory for polyfit's large CPU outputs, kept for reuse once a tensor frees it.
#pragma once

#include <c10/core/Allocator.h>

namespace polyfit::cpu {

// The allocator of the CPU ops' outputs (ops.cpp's new_output). Small outputs go to torch's own
// CPU allocator; large ones (kMinBytes and up) to memory polyfit maps itself, offered transparent
// huge pages, and keeps when the tensor dies, up to a capacity (POLYFIT_CPU_CACHE_MB, default 256;
// 0 keeps nothing), for the next output of a similar size.
//
// Why: glibc hands a freed multi-MB block back to the OS once enough free memory gathers at the top
// of its heap, and the next output of that size then faults in every 4 KB page afresh (zeroed by the
// OS) before a kernel can write it. Measured on a 2-core Xeon, polyval forward+backward at 10^6
// float32 points: 0, ~1000 or ~2000 faults a call, ~250 on average, and 1016-1056 us a call on
// average against 681-687 us with no faults. Reused memory is already mapped: no fault, no zeroing.
// The same trade as torch's CUDA caching allocator, bounded: polyfit.empty_cache() releases it.
c10::Allocator* output_allocator();

}  // namespace polyfit::cpu
