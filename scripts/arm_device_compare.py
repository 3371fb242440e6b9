"""Compares the records of scripts/arm_device_run.py (the ARM agreement check's verdict).

The first record is the reference (the x86 device). For every other record, per run: the
same inputs and the same plan; the cut activation bit-identical or within the tests' native
vs reference tolerance (rtol = atol = 1e-4: the float linear/conv kernels accumulate in
ISA-specific orders, docs/OPS.md); where the packed activation bodies are identical, the
server's answer must be bit-identical too; where they differ (a value on a quantization
step boundary), the answer within OUT_TOL and the same prediction. ``--exact`` makes full
bit-identity a requirement (e.g. the ARM dot-product CPU vs the one without). The integer
linear probe (``int8_probe``: sdot / plain NEON / AVX2 / scalar) has exact int32 sums on
every ISA but a per-ISA order of the float epilogue (scales, groups, bias): within
PROBE_RTOL/PROBE_ATOL (a few ulp) of the reference, bit-identical under ``--exact``.

    python arm_device_compare.py x86.json arm-max.json arm-a53.json [--exact 1,2]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

RTOL, ATOL = 1e-4, 1e-4  # cut activation: the kernel tests' native vs reference tolerance
PROBE_RTOL, PROBE_ATOL = 1e-6, 1e-5  # int8 probe: a few ulp of float epilogue order
OUT_TOL = 0.05  # answer: one quantization step of a few activation codes moves it a little


def _close(a: list[float], b: list[float], rtol: float, atol: float) -> float | None:
    """The largest violation of ``|a-b| <= atol + rtol*|b|`` (None if within)."""
    worst = None
    for u, v in zip(a, b):
        err = abs(u - v) - (atol + rtol * abs(v))
        if (math.isnan(u) != math.isnan(v)) or err > 0:
            worst = max(worst or 0.0, err if not math.isnan(err) else math.inf)
    return worst


def compare(ref: dict, other: dict, exact: bool) -> list[str]:
    """The disagreements of ``other`` with ``ref`` (empty when they agree)."""
    errors: list[str] = []
    if len(ref["runs"]) != len(other["runs"]):
        return [f"{len(other['runs'])} runs, reference has {len(ref['runs'])}"]
    stats = {"identical": 0, "close": 0, "same_body": 0}
    probe_same = ref["int8_probe"] == other["int8_probe"]
    for r, o in zip(ref["int8_probe"], other["int8_probe"]):
        where = f"int8 probe bits={r['bits']} batch={r['batch']}"
        if (r["weight_sha"], r["input_sha"]) != (o["weight_sha"], o["input_sha"]):
            errors.append(f"{where}: different seeded weights/inputs")
        elif exact and r["output"] != o["output"]:
            errors.append(f"{where}: not bit-identical")
        elif (bad := _close(o["output"], r["output"], PROBE_RTOL, PROBE_ATOL)) is not None:
            errors.append(f"{where}: off by {bad:.3g} beyond tolerance")
    for r, o in zip(ref["runs"], other["runs"]):
        where = f"{r['model']} budget={r['budget']} input={r['input']}"
        for key in ("input_sha", "plan_id", "partition_point", "bits", "activation_bits"):
            if r[key] != o[key]:
                errors.append(f"{where}: {key} {o[key]!r} != {r[key]!r}")
        if r["body_sha"] == o["body_sha"] and r["cut"] == o["cut"] and r["output"] == o["output"]:
            stats["identical"] += 1
            continue
        if exact:
            errors.append(f"{where}: not bit-identical (body/cut/output differ)")
            continue
        bad = _close(o["cut"], r["cut"], RTOL, ATOL)
        if bad is not None:
            errors.append(f"{where}: cut activation off by {bad:.3g} beyond tolerance")
        if r["body_sha"] is not None and r["body_sha"] == o["body_sha"]:
            stats["same_body"] += 1
            if r["output"] != o["output"]:
                errors.append(f"{where}: same packed activation, different answer")
            stats["close"] += 1
            continue
        bad = _close(o["output"], r["output"], 0.0, OUT_TOL)
        if bad is not None:
            errors.append(f"{where}: answer off by {bad:.3g} beyond tolerance")
        if r["prediction"] != o["prediction"]:
            errors.append(f"{where}: prediction {o['prediction']} != {r['prediction']}")
        stats["close"] += 1
    print(
        f"    {other['machine']} ({other['cpu_isa']}, torch {other['torch']}) vs "
        f"{ref['machine']} ({ref['cpu_isa']}): {stats['identical']} bit-identical, "
        f"{stats['close']} within tolerance ({stats['same_body']} of them with the same packed "
        f"activation and answer), int8 probe "
        f"{'bit-identical' if probe_same else 'within tolerance'}, "
        f"{len(errors)} disagreements"
    )
    return errors


def main() -> int:
    """CLI entry point; exit status 1 on any disagreement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", help="JSON records; the first is the reference")
    ap.add_argument(
        "--exact",
        default="",
        help="comma-separated record indices (1-based) "
        "that must be bit-identical to the record before them",
    )
    args = ap.parse_args()
    recs = []
    for path in args.records:
        with open(path) as f:
            recs.append(json.load(f))
    exact = {int(i) for i in args.exact.split(",") if i}
    errors: list[str] = []
    for i, rec in enumerate(recs[1:], start=1):
        if not rec["extension"]:
            errors.append(f"{args.records[i]}: native extension not loaded")
        errors += compare(recs[0], rec, exact=False)
        if i in exact and i >= 2:
            errors += compare(recs[i - 1], rec, exact=True)
    for e in errors:
        print(f"    DISAGREE: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
