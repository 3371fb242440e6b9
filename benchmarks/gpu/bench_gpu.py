"""GPU benchmark of the qpart CUDA implementation against cuBLAS / cuDNN fp16, one run.

Times with CUDA events after warm-up (``triton.testing.do_bench``, median). For each case it
reports time, the ratio to the fp16 baseline measured in the same run, achieved GB/s of
weight bytes, and the fraction of the memory-bound roofline ``16 / (bits + overhead)``.
When the active backend is the CUDA C++ one (``QPART_CUDA_BACKEND=cuda``, the default when
the extension has CUDA kernels) and Triton is installed, the Triton kernels are timed on the
same inputs in the same run (``triton ms`` and ``cuda/triton`` = Triton time / CUDA time).

    python benchmarks/gpu/bench_gpu.py --out benchmarks/results/gpu-<name>.md
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import qpart_kernels as qk

LINEAR_SHAPES = [(4096, 4096), (8192, 8192)]
BATCHES = [1, 16, 64]
CONV_LAYERS = [  # ResNet-18-like: (c_in, c_out, kernel, stride, hw)
    (64, 64, 3, 1, 56),
    (128, 128, 3, 1, 28),
    (256, 256, 3, 1, 14),
    (512, 512, 3, 1, 7),
    (64, 128, 1, 2, 56),
]


def _ms(fn) -> float:
    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _triton_ops():
    """The Triton host wrappers when they can be compared with the active CUDA C++ backend."""
    if qk.ops.CUDA_BACKEND != "cuda":
        return None
    from qpart_kernels import triton as qtriton

    if not qtriton.available():
        return None
    from qpart_kernels.triton import ops

    return ops


def _compare(row: dict, t: float, triton_fn) -> dict:
    if triton_fn is not None:
        tt = _ms(triton_fn)
        row.update(triton_ms=tt, cuda_vs_triton=tt / t)
    return row


def bench_linear(rows: list[dict], group_size: int | None) -> None:
    tops = _triton_ops()
    for n, k in LINEAR_SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        for m in BATCHES:
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            base = _ms(lambda: F.linear(x, w))
            for bits in range(1, 9):
                q = qk.quantize_weight(w, bits, group_size)
                t = _ms(lambda: qk.linear(x, *q, bits))
                nbytes = q.payload_bytes()
                bound = 16 * n * k / (8 * nbytes)  # fp16 bytes / packed bytes
                row = dict(
                    op="linear",
                    shape=f"{n}x{k}",
                    batch=m,
                    bits=bits,
                    group=group_size or "channel",
                    ms=t,
                    fp16_ms=base,
                    speedup=base / t,
                    gbps=nbytes / t / 1e6,
                    roofline=bound,
                    frac_of_bound=(base / t) / bound,
                )
                triton_fn = None if tops is None else (lambda: tops.linear(x, *q, None, bits, k))
                rows.append(_compare(row, t, triton_fn))


def bench_conv(rows: list[dict]) -> None:
    tops = _triton_ops()
    for c_in, c_out, kernel, stride, hw in CONV_LAYERS:
        conv = torch.nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2).cuda().half()
        x = torch.randn(1, c_in, hw, hw, device="cuda", dtype=torch.float16)
        base = _ms(lambda: conv(x))
        q = qk.QPartConv2d.from_float(conv.float(), 4).cuda()
        t = _ms(lambda: q(x))
        row = dict(
            op="conv2d",
            shape=f"{c_in}->{c_out} k{kernel} s{stride} {hw}x{hw}",
            batch=1,
            bits=4,
            group="channel",
            ms=t,
            fp16_ms=base,
            speedup=base / t,
            gbps=q.payload_bytes() / t / 1e6,
            roofline=None,
            frac_of_bound=None,
        )
        triton_fn = (
            None
            if tops is None
            else (
                lambda: tops.conv2d(
                    x,
                    q.packed_weight,
                    q.scales,
                    q.zeros,
                    q.bias,
                    4,
                    list(q.weight_shape),
                    [stride] * 2,
                    [kernel // 2] * 2,
                    [1, 1],
                    1,
                )
            )
        )
        rows.append(_compare(row, t, triton_fn))


def to_markdown(rows: list[dict], header: str) -> str:
    triton = any("triton_ms" in r for r in rows)
    extra_h = " triton ms | cuda/triton |" if triton else ""
    lines = [
        header,
        "",
        "| op | shape | batch | bits | group | ms | fp16 ms | speedup | GB/s | "
        "bound | of bound |" + extra_h,
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if triton else ""),
    ]
    for r in rows:
        bound = f"{r['roofline']:.2f}" if r["roofline"] else "-"
        frac = f"{r['frac_of_bound']:.0%}" if r["frac_of_bound"] else "-"
        extra = (
            f" {r['triton_ms']:.4f} | {r['cuda_vs_triton']:.2f}x |"
            if "triton_ms" in r
            else (" - | - |" if triton else "")
        )
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['batch']} | {r['bits']} | {r['group']} | "
            f"{r['ms']:.4f} | {r['fp16_ms']:.4f} | {r['speedup']:.2f}x | "
            f"{r['gbps']:.0f} | {bound} | {frac} |" + extra
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="markdown results file (JSON written beside it)"
    )
    parser.add_argument("--quick", action="store_true", help="4096x4096 only, batch 1 and 16")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    if args.quick:
        LINEAR_SHAPES[:] = LINEAR_SHAPES[:1]
        BATCHES[:] = BATCHES[:2]
    rows: list[dict] = []
    bench_linear(rows, None)
    bench_linear(rows, 128)
    bench_conv(rows)
    name = torch.cuda.get_device_name()
    header = (
        f"# GPU benchmark on {name}\n\nbackend: {qk.ops.CUDA_BACKEND}, torch "
        f"{torch.__version__}, {platform.node()}; baseline: fp16 cuBLAS F.linear / cuDNN "
        f"conv2d in the same run; command: `python benchmarks/gpu/bench_gpu.py --out {args.out}`"
    )
    with open(args.out, "w") as fh:
        fh.write(to_markdown(rows, header))
    with open(args.out.rsplit(".", 1)[0] + ".json", "w") as fh:
        json.dump(dict(device=name, rows=rows), fh, indent=1)
    print(to_markdown(rows, header))


if __name__ == "__main__":
    main()
