"""Ahead-of-time compilation of the Triton kernels for given GPU architectures, no GPU needed.

Lowers every kernel through Triton's real GPU pipeline to a cubin, catching lowering errors
that the interpreter cannot (unsupported ops, bad dot shapes, ...). Must run without
``TRITON_INTERPRET`` (the interpreter replaces the kernels).

    python -m qpart_kernels.triton.aot 87 90      # Jetson Orin and Hopper
"""

from __future__ import annotations

import argparse
import os

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import kernels

I32 = "i32"
MATMUL_INTS = dict(row_bytes=I32, group_size=I32, groups=I32)
CASES = {
    "group_params": (
        kernels.group_params_kernel,
        dict(x_ptr="*fp32", scale_bits_ptr="*i16", zero_ptr="*u8", group_size=I32, qmax="fp32"),
        dict(BLOCK=1024),
    ),
    "quantize_codes": (
        kernels.quantize_codes_kernel,
        dict(
            x_ptr="*fp32",
            scale_ptr="*fp16",
            zero_ptr="*u8",
            codes_ptr="*u8",
            group_size=I32,
            qmax="fp32",
        ),
        dict(BLOCK=256),
    ),
    "pack": (
        kernels.pack_kernel,
        dict(codes_ptr="*u8", packed_ptr="*u8", K=I32, row_bytes=I32),
        dict(BITS=5, BLOCK=64),
    ),
    "dequantize": (
        kernels.dequantize_kernel,
        dict(
            packed_ptr="*u8",
            scale_ptr="*fp16",
            zero_ptr="*u8",
            out_ptr="*fp32",
            K=I32,
            **MATMUL_INTS,
        ),
        dict(BITS=3, BLOCK=256),
    ),
    "linear_gemv": (
        kernels.linear_kernel,
        dict(
            x_ptr="*fp16",
            packed_ptr="*u8",
            scale_ptr="*fp16",
            zero_ptr="*u8",
            bias_ptr="*fp16",
            y_ptr="*fp32",
            M=I32,
            N=I32,
            K=I32,
            **MATMUL_INTS,
            M_BUCKET=I32,
        ),
        dict(BITS=4, HAS_BIAS=True, USE_DOT=False, BLOCK_M=1, BLOCK_N=64, BLOCK_K=128, SPLIT_K=1),
    ),
    "linear_gemv_split_k": (
        kernels.linear_kernel,
        dict(
            x_ptr="*fp32",
            packed_ptr="*u8",
            scale_ptr="*fp16",
            zero_ptr="*u8",
            bias_ptr="*fp32",
            y_ptr="*fp32",
            M=I32,
            N=I32,
            K=I32,
            **MATMUL_INTS,
            M_BUCKET=I32,
        ),
        dict(BITS=3, HAS_BIAS=True, USE_DOT=False, BLOCK_M=4, BLOCK_N=32, BLOCK_K=256, SPLIT_K=4),
    ),
    "linear_gemm": (
        kernels.linear_kernel,
        dict(
            x_ptr="*bf16",
            packed_ptr="*u8",
            scale_ptr="*fp16",
            zero_ptr="*u8",
            bias_ptr="*fp32",
            y_ptr="*fp32",
            M=I32,
            N=I32,
            K=I32,
            **MATMUL_INTS,
            M_BUCKET=I32,
        ),
        dict(BITS=7, HAS_BIAS=False, USE_DOT=True, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, SPLIT_K=1),
    ),
    "conv2d": (
        kernels.conv2d_kernel,
        dict(
            x_ptr="*fp16",
            packed_ptr="*u8",
            scale_ptr="*fp16",
            zero_ptr="*u8",
            bias_ptr="*fp16",
            y_ptr="*fp32",
            C_in=I32,
            H=I32,
            W=I32,
            C_out=I32,
            H_out=I32,
            W_out=I32,
            M=I32,
            c_per_group=I32,
            out_per_group=I32,
            K=I32,
            **MATMUL_INTS,
            stride_h=I32,
            stride_w=I32,
            pad_h=I32,
            pad_w=I32,
            dil_h=I32,
            dil_w=I32,
        ),
        dict(KH=3, KW=3, BITS=2, HAS_BIAS=True, USE_DOT=True, BLOCK_M=64, BLOCK_N=32, BLOCK_K=32),
    ),
}


def compile_kernel(name: str, capability: int) -> int:
    """Compiles one kernel variant of :data:`CASES` for ``sm_<capability>``; returns cubin bytes."""
    fn, signature, constexprs = CASES[name]
    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    compiled = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", capability, 32),
    )
    return len(compiled.asm["cubin"])


def main(argv: list[str] | None = None) -> None:
    """Compiles every kernel for each requested compute capability and prints the sizes."""
    parser = argparse.ArgumentParser(description="AOT-compile the QPART Triton kernels")
    parser.add_argument("capabilities", nargs="+", type=int, help="e.g. 87 90")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: AOT compilation needs the real compiler")
    for capability in args.capabilities:
        for name in sorted(CASES):
            print(f"sm_{capability} {name}: {compile_kernel(name, capability)} bytes", flush=True)


if __name__ == "__main__":
    main()
