"""Turns the pytest-benchmark JSON of test_bench_cpu_linear.py into the RESULTS.md tables.

    python benchmarks/make_results.py benchmarks/results/cpu-linear.json > benchmarks/RESULTS.md

Derived numbers use each case's *minimum* time (the machine is shared; the minimum is the
least disturbed run); the median is shown too. GB/s = weight bytes read per call / time.
Roofline: a memory-bound weight read is 32 / (bits + overhead) times faster than fp32, with
overhead = 24 / group bits per weight (fp16 scale + uint8 zero); "roof %" = achieved speedup
over fp32 / that bound = (GB/s of this kernel) / (GB/s of fp32 F.linear in the same run).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = []
    for b in data["benchmarks"]:
        e = b["extra_info"]
        rows.append(dict(e, t_min=b["stats"]["min"], t_med=b["stats"]["median"]))
    return data, rows


def roof(row):
    if row["kind"] == "fp32":
        return 1.0
    if row["kind"].startswith("int8"):
        return 4.0
    return 32.0 / (row["bits"] + 24.0 / row["group"])


def main(path):
    data, rows = load(path)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["n"], r["k"], r["batch"], r["cache"])].append(r)
    info = data.get("machine_info", {})
    out = []
    out.append("# CPU packed linear: benchmark results\n")
    out.append(
        f"Machine: {info.get('cpu', {}).get('brand_raw', '?')}, "
        f"{info.get('cpu', {}).get('count', '?')} logical CPUs; torch threads: 2. "
        f"Run at {data.get('datetime', '?')}.\n"
    )
    big = sorted({(n, k) for n, k, *_ in groups if n * k >= 4096 * 4096})
    small = sorted({(n, k) for n, k, *_ in groups if n * k < 4096 * 4096}, reverse=True)

    summary = []
    for n, k in big:
        for batch in (1, 8, 64):
            for cache in ("cold", "hot"):
                g = groups.get((n, k, batch, cache))
                if not g:
                    continue
                fp32 = next((r for r in g if r["kind"] == "fp32"), None)
                if fp32 is None:
                    continue
                out.append(f"\n### {n}x{k}, batch {batch}, cache-{cache}\n")
                out.append(
                    "| kernel | group | time min (ms) | median (ms) | x fp32 | GB/s | roof % |"
                )
                out.append("|---|---|---:|---:|---:|---:|---:|")

                def key(r):
                    return (
                        r["kind"] != "fp32",
                        not r["kind"].startswith("int8"),
                        r.get("bits", 0),
                        r.get("group", 0),
                    )

                for r in sorted(g, key=key):
                    speed = fp32["t_min"] / r["t_min"]
                    gbs = r["weight_bytes"] / r["t_min"] / 1e9
                    grp = "" if "group" not in r else ("channel" if r["group"] == k else r["group"])
                    out.append(
                        f"| {r['kind']} | {grp} | {r['t_min'] * 1e3:.3f} | "
                        f"{r['t_med'] * 1e3:.3f} | {speed:.2f} | {gbs:.1f} | "
                        f"{100 * speed / roof(r):.0f} |"
                    )
                    if r["kind"] != "fp32":
                        summary.append((n, k, batch, cache, r, speed))

    if small:
        out.append(
            "\n### MNIST MLP layers (cache-hot), speedup over fp32 F.linear "
            "(per-channel / group 128 where it divides in_features)\n"
        )
        bits_all = sorted({r["bits"] for r in rows if "bits" in r})
        out.append(
            "| layer | batch | fp32 (us) | int8 dyn | "
            + " | ".join(f"{b}-bit" for b in bits_all)
            + " |"
        )
        out.append("|---|---:|---:|---:|" + "---:|" * len(bits_all))
        for n, k in small:
            for batch in (1, 8, 64):
                g = groups.get((n, k, batch, "hot"))
                if not g:
                    continue
                fp32 = next(r for r in g if r["kind"] == "fp32")
                i8 = next((r for r in g if r["kind"].startswith("int8")), None)
                cells = []
                for b in bits_all:
                    pc = next((r for r in g if r.get("bits") == b and r["group"] == k), None)
                    gr = next(
                        (r for r in g if r.get("bits") == b and r["group"] == 128 and k != 128),
                        None,
                    )
                    c = f"{fp32['t_min'] / pc['t_min']:.2f}" if pc else "-"
                    if gr:
                        c += f" / {fp32['t_min'] / gr['t_min']:.2f}"
                    cells.append(c)
                i8s = f"{fp32['t_min'] / i8['t_min']:.2f}" if i8 else "-"
                out.append(
                    f"| {k}->{n} | {batch} | {fp32['t_min'] * 1e6:.1f} | {i8s} | "
                    + " | ".join(cells)
                    + " |"
                )
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
