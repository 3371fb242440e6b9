// Run-time width -> compile-time template argument, shared by every ISA file's entry point.
#pragma once

#include <type_traits>

namespace qpart {
namespace kernels {
namespace detail {

/// A width as a compile-time constant: Bits<B>::value == B.
template <int B>
using Bits = std::integral_constant<int, B>;

/// Calls f(Bits<bits>{}) for bits in 1..8, so a kernel templated on its width is written once:
/// `with_bits(a.bits, [&](auto b) { run<decltype(b)::value>(a); });`. Other widths do nothing
/// (the op checks reject them before any kernel runs).
template <typename F>
inline void with_bits(int bits, F&& f) {
  switch (bits) {
    case 1: f(Bits<1>{}); return;
    case 2: f(Bits<2>{}); return;
    case 3: f(Bits<3>{}); return;
    case 4: f(Bits<4>{}); return;
    case 5: f(Bits<5>{}); return;
    case 6: f(Bits<6>{}); return;
    case 7: f(Bits<7>{}); return;
    case 8: f(Bits<8>{}); return;
    default: return;
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
