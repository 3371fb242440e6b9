"""Triton kernels for the QPART packed format (docs/FORMAT.md).

All kernels read and write exactly the bytes of the reference implementation. Rounding is
round-half-to-even via the 1.5 * 2^23 trick (exact for |v| < 2^22; quantizer values are
far below that) and divisions use ``div_rn`` (IEEE, like the CPU kernels), so codes are
bit-identical to every other backend.
"""

from __future__ import annotations

import triton
import triton.language as tl

_RNE_MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2^23: (v + M) - M rounds v to nearest even


@triton.jit
def _round_half_even(v):
    return (v + _RNE_MAGIC) - _RNE_MAGIC


@triton.jit
def group_params_kernel(x_ptr, scale_bits_ptr, zero_ptr, group_size, qmax, BLOCK: tl.constexpr):
    """One program per group: fp16 scale (as int16 bits, rounded up) and zero point."""
    gid = tl.program_id(0).to(tl.int64)
    base = x_ptr + gid * group_size
    lo = tl.zeros([BLOCK], dtype=tl.float32)
    hi = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, group_size, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        v = tl.load(base + offs, mask=offs < group_size, other=0.0).to(tl.float32)
        lo = tl.minimum(lo, v)
        hi = tl.maximum(hi, v)
    lo_s = tl.min(lo, axis=0)
    hi_s = tl.max(hi, axis=0)
    all_zero = hi_s == lo_s
    delta = tl.math.div_rn(hi_s - lo_s, qmax)
    half = delta.to(tl.float16)
    bits = half.to(tl.int16, bitcast=True)
    bits = tl.where(half.to(tl.float32) < delta, bits + 1, bits).to(tl.int16)
    bits = tl.where((bits == 0) & (hi_s != lo_s), 1, bits).to(tl.int16)  # underflow: 2^-24
    bits = tl.where(all_zero, 0, bits).to(tl.int16)
    scale = bits.to(tl.float16, bitcast=True).to(tl.float32)
    safe = tl.where(all_zero, 1.0, scale)
    zero = _round_half_even(tl.math.div_rn(-lo_s, safe))
    zero = tl.minimum(tl.maximum(zero, 0.0), qmax)
    zero = tl.where(all_zero, 0.0, zero)
    tl.store(scale_bits_ptr + gid, bits)
    tl.store(zero_ptr + gid, zero.to(tl.uint8))


@triton.jit
def quantize_codes_kernel(
    x_ptr, scale_ptr, zero_ptr, codes_ptr, group_size, qmax, BLOCK: tl.constexpr
):
    """Grid (groups, chunks): one uint8 code per value, given the group's scale and zero."""
    gid = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < group_size
    v = tl.load(x_ptr + gid * group_size + offs, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + gid).to(tl.float32)
    zero = tl.load(zero_ptr + gid).to(tl.float32)
    safe = tl.where(scale == 0.0, 1.0, scale)
    q = _round_half_even(tl.math.div_rn(v, safe)) + zero
    q = tl.minimum(tl.maximum(q, 0.0), qmax)
    q = tl.where(scale == 0.0, 0.0, q)
    tl.store(codes_ptr + gid * group_size + offs, q.to(tl.uint8), mask=mask)


@triton.jit
def pack_kernel(codes_ptr, packed_ptr, K, row_bytes, BITS: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (rows, byte blocks): gathers the 8 stream bits of each output byte."""
    row = tl.program_id(0).to(tl.int64)
    byte = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    bit = tl.arange(0, 8)
    stream = byte[:, None] * 8 + bit[None, :]
    j = stream // BITS
    t = stream % BITS
    valid = (j < K) & (byte[:, None] < row_bytes)
    code = tl.load(codes_ptr + row * K + j, mask=valid, other=0).to(tl.int32)
    value = ((code >> t) & 1) << bit[None, :]
    tl.store(
        packed_ptr + row * row_bytes + byte,
        tl.sum(value, axis=1).to(tl.uint8),
        mask=byte < row_bytes,
    )


@triton.jit
def _unpack(row_ptr, cols, row_bytes, mask, BITS: tl.constexpr):
    """Codes at columns ``cols`` of one packed row (any shape of ``cols``)."""
    pos = cols * BITS
    byte = pos >> 3
    shift = pos & 7
    lo = tl.load(row_ptr + byte, mask=mask, other=0).to(tl.int32)
    hi = tl.load(row_ptr + byte + 1, mask=mask & (byte + 1 < row_bytes), other=0).to(tl.int32)
    return ((lo | (hi << 8)) >> shift) & ((1 << BITS) - 1)


@triton.jit
def dequantize_kernel(
    packed_ptr,
    scale_ptr,
    zero_ptr,
    out_ptr,
    K,
    row_bytes,
    group_size,
    groups,
    BITS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Grid (rows, column blocks): float32 values of a packed matrix."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < K
    code = _unpack(packed_ptr + row * row_bytes, cols, row_bytes, mask, BITS)
    g = row * groups + cols // group_size
    scale = tl.load(scale_ptr + g, mask=mask, other=0.0).to(tl.float32)
    zero = tl.load(zero_ptr + g, mask=mask, other=0).to(tl.float32)
    tl.store(out_ptr + row * K + cols, (code.to(tl.float32) - zero) * scale, mask=mask)


@triton.jit
def _weight_tile(
    packed_ptr,
    scale_ptr,
    zero_ptr,
    rows,
    cols,
    row_bytes,
    group_size,
    groups,
    mask,
    BITS: tl.constexpr,
):
    """Dequantized float32 weight tile W[rows, cols] (rows: [BN, 1], cols: [1, BK])."""
    pos = cols * BITS
    byte = pos >> 3
    base = packed_ptr + rows.to(tl.int64) * row_bytes
    lo = tl.load(base + byte, mask=mask, other=0).to(tl.int32)
    hi = tl.load(base + byte + 1, mask=mask & (byte + 1 < row_bytes), other=0).to(tl.int32)
    code = ((lo | (hi << 8)) >> (pos & 7)) & ((1 << BITS) - 1)
    g = rows.to(tl.int64) * groups + cols // group_size
    scale = tl.load(scale_ptr + g, mask=mask, other=0.0).to(tl.float32)
    zero = tl.load(zero_ptr + g, mask=mask, other=0).to(tl.float32)
    return (code.to(tl.float32) - zero) * scale


@triton.jit
def _accumulate(acc, x, w, USE_DOT: tl.constexpr):
    """acc[BM, BN] += x[BM, BK] @ w[BN, BK]^T: a ``tl.dot`` tile or a GEMV-style reduction."""
    if USE_DOT:
        acc += tl.dot(x, tl.trans(w), input_precision="ieee")
    else:
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    return acc


@triton.jit
def linear_kernel(
    x_ptr,
    packed_ptr,
    scale_ptr,
    zero_ptr,
    bias_ptr,
    y_ptr,
    M,
    N,
    K,
    row_bytes,
    group_size,
    groups,
    M_BUCKET,
    BITS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    """y[M, N] = x[M, K] @ W[N, K]^T (+ bias), W packed; fp32 accumulation.

    ``USE_DOT`` selects the tiled GEMM (``tl.dot``, tensor cores on GPU) for larger batches;
    otherwise a GEMV-style broadcast-multiply-reduce that suits batch 1..15. With
    ``SPLIT_K > 1`` program axis 2 splits the reduction and partial sums are added
    atomically into a zeroed ``y`` (more parallelism for small batches). ``M_BUCKET`` is
    unused by the kernel: it is the batch-size bucket the autotuner keys on.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, K, BLOCK_K * SPLIT_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x_mask = (rm[:, None] < M) & (rk[None, :] < K)
        x = tl.load(x_ptr + rm[:, None].to(tl.int64) * K + rk[None, :], mask=x_mask, other=0.0).to(
            tl.float32
        )
        w_mask = (rn[:, None] < N) & (rk[None, :] < K)
        w = _weight_tile(
            packed_ptr,
            scale_ptr,
            zero_ptr,
            rn[:, None],
            rk[None, :],
            row_bytes,
            group_size,
            groups,
            w_mask,
            BITS,
        )
        acc = _accumulate(acc, x, w, USE_DOT)
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    y_mask = (rm[:, None] < M) & (rn[None, :] < N)
    y_offs = y_ptr + rm[:, None].to(tl.int64) * N + rn[None, :]
    if SPLIT_K > 1:
        tl.atomic_add(y_offs, acc, mask=y_mask)
    else:
        tl.store(y_offs, acc, mask=y_mask)


@triton.jit
def conv2d_kernel(
    x_ptr,
    packed_ptr,
    scale_ptr,
    zero_ptr,
    bias_ptr,
    y_ptr,
    C_in,
    H,
    W,
    C_out,
    H_out,
    W_out,
    M,
    c_per_group,
    out_per_group,
    K,
    row_bytes,
    group_size,
    groups,
    KH: tl.constexpr,
    KW: tl.constexpr,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    BITS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Implicit-GEMM conv2d: rows m = (image, oy, ox), columns = output channels of one
    group, reduction k = (c, r, s) gathered from the NCHW input on the fly."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    grp = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    pixels = H_out * W_out
    img = rm // pixels
    oy = (rm % pixels) // W_out
    ox = rm % W_out
    co = grp * out_per_group + rn
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        c = rk // (KH * KW)
        r = (rk % (KH * KW)) // KW
        s = rk % KW
        iy = oy[:, None] * stride_h - pad_h + r[None, :] * dil_h
        ix = ox[:, None] * stride_w - pad_w + s[None, :] * dil_w
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        x_mask = (rm[:, None] < M) & (rk[None, :] < K) & inside
        channel = grp * c_per_group + c[None, :]
        offs = ((img[:, None].to(tl.int64) * C_in + channel) * H + iy) * W + ix
        x = tl.load(x_ptr + offs, mask=x_mask, other=0.0).to(tl.float32)
        w_mask = (rn[:, None] < out_per_group) & (rk[None, :] < K)
        w = _weight_tile(
            packed_ptr,
            scale_ptr,
            zero_ptr,
            co[:, None],
            rk[None, :],
            row_bytes,
            group_size,
            groups,
            w_mask,
            BITS,
        )
        acc = _accumulate(acc, x, w, USE_DOT)
    n_mask = rn < out_per_group
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    out = ((img[:, None].to(tl.int64) * C_out + co[None, :]) * H_out + oy[:, None]) * W_out + ox[
        :, None
    ]
    tl.store(y_ptr + out, acc, mask=(rm[:, None] < M) & n_mask[None, :])
