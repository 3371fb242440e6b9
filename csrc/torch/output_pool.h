// Reused memory for the large tensors the CPU ops return (activations at batch sizes > 1).
//
// glibc serves a large allocation with a fresh mmap and unmaps it on free (above its mmap
// threshold, which never exceeds 32 MiB), so in a network at batch 32 every conv output is
// new memory: the kernel that writes it first takes a page fault per 4 KiB and the OS zeroes
// every page (measured: a quarter of a ResNet-18 forward at batch 32 on two cores). This
// allocator keeps the blocks of such tensors when they are freed and hands them out again for
// the next tensor of a size within 1/8 above, up to QPART_OUTPUT_POOL_MB free bytes in all
// (default: a sixteenth of the machine's memory within [256, 1024]; 0: off, plain at::empty). Only
// tensors of at least kPooledMinBytes use it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstddef>

namespace qpart {
namespace glue {

/// Smallest tensor (bytes) that comes from the pool; smaller ones are cheap for malloc.
constexpr size_t kPooledMinBytes = size_t{1} << 20;

/// An uninitialised contiguous tensor like at::empty(sizes, options) (CPU): from the pool when
/// it is large enough and the pool is on. Its storage is resizable.
at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

/// Free bytes the pool holds now (for tests).
size_t output_pool_free_bytes();
/// The most free bytes the pool keeps (QPART_OUTPUT_POOL_MB or its default).
size_t output_pool_cap_bytes();

}  // namespace glue
}  // namespace qpart
