"""Seeded fuzzer of every ``qpart`` op: native kernels against the pure-PyTorch reference.

Used by tests/kernels/test_op_fuzz.py, which runs it in child processes (one per CPU ISA,
``QPART_CPU_ISA`` forced) so that a crash is counted instead of killing the test run:

    python tests/kernels/fuzz_ops.py SEED CASES   # prints one JSON line per case

Before each case the child prints ``{"start": i}`` (flushed), so the parent knows which case
a crash happened in and restarts the child after it. A case's line holds the native and the
reference outcome ("ok" or the exception type) and whether the values agree.

Cases mix valid arguments with hostile ones: int64-boundary geometry (the overflow
reproducers of issue 18), zero/negative sizes, out-of-range bits, wrong dtypes and shapes,
NaN/Inf/huge values and non-finite scales. Sizes stay tiny, so accepted calls are cheap.
"""

from __future__ import annotations

import json
import random
import sys

import torch

HUGE = [2**62, 2**63 - 1, 6148914691236517206, 2**62 + 1]
OPS = (
    "quantize_weight",
    "dequantize_weight",
    "linear",
    "conv2d",
    "quantize_activation",
    "dequantize_activation",
    "max_pool2d",
)


def _int(rng: random.Random, low: int, high: int, hostile: float = 0.15) -> int:
    """Mostly a value in [low, high]; sometimes 0, -1 or an int64-boundary value."""
    if rng.random() < hostile:
        return rng.choice([0, -1, *HUGE])
    return rng.randint(low, high)


def _bits(rng: random.Random) -> int:
    """Mostly 1..8; sometimes out of range, or not an int (bool, float: a TypeError)."""
    if rng.random() > 0.12:
        return rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 8, 4])
    return rng.choice([0, 9, -3, True, False, 4.0])


def _values(
    rng: random.Random, shape: list[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    x = torch.randn(shape)
    if x.numel() and rng.random() < 0.25:
        flat = x.view(-1)
        for _ in range(rng.randint(1, 3)):
            flat[rng.randrange(flat.numel())] = rng.choice(
                [float("inf"), float("-inf"), float("nan"), 1e20, -1e20]
            )
    return x.to(dtype)


def _dtype(rng: random.Random) -> torch.dtype:
    r = rng.random()
    if r < 0.8:
        return torch.float32
    return rng.choice([torch.float16, torch.bfloat16, torch.float64, torch.int32])


def _packed(rng: random.Random, rows: int, k: int, bits: int, group: int):
    """A packed weight: usually a real quantized one, sometimes random bytes and fp16 scales."""
    from qpart_kernels.ops import reference

    k = max(k, 1)
    rows = max(rows, 1)
    b = bits if type(bits) is int and 1 <= bits <= 8 else 4
    g = group if group > 0 and k % group == 0 and (group == k or group % 32 == 0) else k
    if rng.random() < 0.7:
        packed, scales, zeros = reference.quantize_weight(torch.randn(rows, k), b, g)
    else:
        packed = torch.randint(0, 256, (rows, (k * b + 7) // 8), dtype=torch.uint8)
        scales = (torch.randn(rows, k // g) * rng.choice([1e-3, 1.0, 100.0])).to(torch.float16)
        if rng.random() < 0.3:
            scales.view(-1)[0] = rng.choice([float("inf"), float("nan"), 65504.0])
        zeros = torch.randint(0, 2**b, (rows, k // g), dtype=torch.uint8)
    r = rng.random()
    if r < 0.05:
        packed = packed[:, :-1] if packed.shape[1] > 1 else packed.repeat(1, 2)
    elif r < 0.1:
        scales = scales.to(torch.float32)
    elif r < 0.15:
        zeros = zeros[:0]
    return packed, scales, zeros


def make_case(rng: random.Random, op: str) -> dict:
    """One fuzz case: the op and (as plain data) how to build its arguments."""
    return {"op": op, "seed": rng.randrange(2**31)}


def build_args(case: dict) -> tuple[str, tuple]:
    """The op's positional arguments (native schema order) for a case."""
    rng = random.Random(case["seed"])
    torch.manual_seed(case["seed"])
    op = case["op"]
    bits = _bits(rng)
    if op == "quantize_weight":
        rows, k = _int(rng, 1, 6, 0.05), rng.choice([1, 3, 8, 32, 64, 96])
        group = rng.choice([k, k, k, k, 32, 64, 16, 0, -32, *HUGE[:1]])
        shape = [rows, k] if rng.random() > 0.05 else [k]
        if rows < 0 or rows > 64:
            shape = [0, k]
        return op, (_values(rng, shape, _dtype(rng)), bits, group)
    if op == "dequantize_weight":
        rows, k = rng.randint(1, 5), rng.choice([1, 5, 32, 64])
        packed, scales, zeros = _packed(rng, rows, k, bits, rng.choice([k, 32]))
        in_features = k if rng.random() > 0.2 else _int(rng, 1, 70, 0.6)
        return op, (packed, scales, zeros, bits, in_features)
    if op == "linear":
        m, k, n = rng.randint(0, 4), rng.choice([1, 8, 32, 64, 96]), rng.randint(1, 9)
        packed, scales, zeros = _packed(rng, n, k, bits, rng.choice([k, 32]))
        x = _values(rng, [rng.randint(1, 2), m, k] if rng.random() < 0.3 else [m, k], _dtype(rng))
        in_features = k if rng.random() > 0.1 else _int(rng, 1, 100, 0.5)
        bias = None if rng.random() < 0.5 else _values(rng, [n if rng.random() > 0.1 else n + 1])
        return op, (x, packed, scales, zeros, bias, bits, in_features, rng.random() < 0.3)
    if op == "conv2d":
        groups = rng.choice([1, 1, 1, 1, 2, 2, 0, -1])
        cg, c_out = rng.randint(1, 3), rng.choice([1, 2, 4])
        kh, kw = _int(rng, 1, 3, 0.05), _int(rng, 1, 3, 0.05)
        c_in = cg * (groups if groups > 0 else 1)
        k = cg * kh * kw if 0 < kh <= 3 and 0 < kw <= 3 else rng.randint(1, 9)
        packed, scales, zeros = _packed(rng, c_out * (groups if groups > 0 else 1), k, bits, k)
        x = _values(
            rng, [rng.randint(1, 2), c_in, rng.randint(1, 7), rng.randint(1, 7)], _dtype(rng)
        )
        weight_shape = [c_out * (groups if groups > 0 else 1), cg, kh, kw]
        stride = [_int(rng, 1, 3, 0.05), _int(rng, 1, 3, 0.05)]
        padding = [_int(rng, 0, 2, 0.05), _int(rng, 0, 2, 0.05)]
        dilation = [_int(rng, 1, 3, 0.05), _int(rng, 1, 3, 0.05)]
        bias = None if rng.random() < 0.5 else _values(rng, [weight_shape[0]])
        args = (
            x,
            packed,
            scales,
            zeros,
            bias,
            bits,
            weight_shape,
            stride,
            padding,
            dilation,
            groups,
            rng.random() < 0.3,  # int8_activations
        )
        return op, args
    if op == "max_pool2d":
        kernel = [_int(rng, 1, 4, 0.1), _int(rng, 1, 4, 0.1)]
        stride = [_int(rng, 1, 3, 0.1), _int(rng, 1, 3, 0.1)]
        padding = [_int(rng, 0, 2, 0.1), _int(rng, 0, 2, 0.1)]
        shape = [rng.randint(0, 2), rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 9)]
        if rng.random() < 0.05:
            shape = shape[1:]  # not NCHW
        x = _values(rng, shape, _dtype(rng))
        if rng.random() < 0.1:
            x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        return op, (x, kernel, stride, padding)
    if op == "quantize_activation":
        shape = [rng.randint(0, 4) if rng.random() < 0.1 else rng.randint(1, 4), rng.randint(1, 40)]
        return op, (_values(rng, shape, _dtype(rng)), bits, rng.random() < 0.5)
    rows, k = rng.randint(1, 4), rng.randint(1, 40)
    packed, scales, zeros = _packed(rng, rows, k, bits, k)
    shape = [rows, k] if rng.random() > 0.25 else [_int(rng, 1, 8, 0.5), _int(rng, 1, 40, 0.5)]
    dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.float32, torch.int64])
    return op, (packed, scales, zeros, bits, shape, dtype)


def _outcome(fn, args):
    try:
        return "ok", fn(*args)
    except (ValueError, TypeError, RuntimeError, IndexError, OverflowError) as exc:
        return type(exc).__name__, None


def _close(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    a, b = a.double(), b.double()
    if not (
        torch.equal(a.isnan(), b.isnan())
        and torch.equal(a.isposinf(), b.isposinf())
        and torch.equal(a.isneginf(), b.isneginf())
    ):
        return False
    fin = torch.isfinite(a) & torch.isfinite(b)
    scale = b[fin].abs().max().item() if fin.any() else 0.0
    return bool(((a[fin] - b[fin]).abs() <= 2e-2 * scale + 1e-3).all())


def run_case(case: dict) -> dict:
    """Runs one case natively and on the reference; returns the comparison."""
    from qpart_kernels.ops import reference

    op, args = build_args(case)
    native, n_out = _outcome(getattr(torch.ops.qpart, op), args)
    ref, r_out = _outcome(getattr(reference, op), args)
    agree = (native == "ok") == (ref == "ok")
    if agree and native == "ok":
        agree = _close(n_out, r_out)
    return {"op": op, "seed": case["seed"], "native": native, "reference": ref, "agree": agree}


def cases(seed: int, count: int) -> list[dict]:
    """``count`` cases spread over every op, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [make_case(rng, OPS[i % len(OPS)]) for i in range(count)]


def main(argv: list[str]) -> None:
    import qpart_kernels  # noqa: F401  (registers the ops and loads the extension)

    torch.set_num_threads(1)
    seed, count, start = int(argv[0]), int(argv[1]), int(argv[2]) if len(argv) > 2 else 0
    for i, case in enumerate(cases(seed, count)):
        if i < start:
            continue
        print(json.dumps({"start": i}), flush=True)
        print(json.dumps({"case": i, **run_case(case)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
