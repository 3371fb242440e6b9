"""Serving benchmarks on loopback: requests per second and p50 / p99 latency for plan,
segment (cached = 304 and not), infer, and the end-to-end latency breakdown of one device
request (MNIST MLP); with ``--modes uvicorn,1,2`` the same load against plain ``qpart serve``
and against 1 and 2 Ray Serve replicas, in one run.

    .venv/bin/python benchmarks/bench_serving.py [--seconds 3] [--clients 4] [--cache-dir DIR]
        [--modes uvicorn,1,2] [--load httpx|wrk]

The server runs in a separate process (``qpart serve``, one torch thread). The load comes
from ``--clients`` Python threads with their own ``httpx`` connection (``--load httpx``,
the default), or from ``wrk`` (``--load wrk``: one wrk thread, ``--clients`` connections;
a C client, so that the Python client is not what is measured; ``apt-get install wrk``).
Numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from qpart.core.costs import DeviceProfile, ObjectiveWeights
from qpart.serving.device import DeviceClient
from qpart.serving.server import free_port
from qpart.serving.wire import encode_activation
from qpart.workloads.data import load_mnist


def _rate(fn, seconds: float, clients: int) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) of ``fn(client)`` from ``clients`` threads."""
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker():
        with httpx.Client() as c:
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = fn(c)
                assert r.status_code < 400, r.text
                with lock:
                    lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    return len(lat) / (time.perf_counter() - t0), 1e3 * statistics.median(lat), 1e3 * p99


_WRK_SCRIPT = """
wrk.method = "{method}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
{headers}
"""


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _wrk_rate(
    url: str, method: str, body: bytes, headers: dict, seconds: float, connections: int
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) of one request repeated by ``wrk`` (one thread,
    ``connections`` connections); raises if any answer was an error."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(body)
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = Path(tmp) / "request.lua"
        script.write_text(_WRK_SCRIPT.format(method=method, body=body_path, headers=lines))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = _wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    return rps, p50, p99


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument(
        "--modes",
        default="uvicorn",
        help="comma-separated server modes, run one after the other with the same client "
        "load: 'uvicorn' (plain qpart serve) and/or replica counts ('1,2': qpart serve "
        "--replicas N on Ray Serve)",
    )
    ap.add_argument(
        "--load",
        choices=("httpx", "wrk"),
        default="httpx",
        help="load generator: Python httpx client threads, or wrk (C; needs wrk on PATH)",
    )
    args = ap.parse_args()
    if args.load == "wrk" and shutil.which("wrk") is None:
        sys.exit("--load wrk needs wrk on PATH (apt-get install wrk)")
    results = {}
    for mode in args.modes.split(","):
        results[mode] = run_mode(args, mode.strip())
    if len(results) > 1:
        print("\nsame client load, every mode (req/s; p50 / p99 ms):")
        names = list(next(iter(results.values())))
        print(f"{'endpoint':<32}" + "".join(f"{m:>24}" for m in results))
        for i, name in enumerate(names):
            cells = []
            for rows in results.values():
                rps, p50, p99 = list(rows.values())[i]
                cells.append(f"{rps:>6.0f}; {p50:>6.2f} / {p99:>6.2f}")
            print(f"{name:<32}" + "".join(f"{c:>24}" for c in cells))


def run_mode(args, mode: str) -> dict:
    """Starts the server in ``mode``, measures every endpoint, stops it."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "qpart.cli",
        "serve",
        "--port",
        str(port),
        "--no-progress",
        "--max-concurrency",
        "16",
    ] + (["--cache-dir", args.cache_dir] if args.cache_dir else [])
    if mode != "uvicorn":
        cmd += ["--replicas", mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        x = load_mnist().x_test[:1]
        phone = DeviceClient(url, DeviceProfile(clock_hz=2e9), weights=ObjectiveWeights(1, 1, 100))
        plan = phone.plan("mnist-mlp", 0.02)
        seg, _ = phone.segment(plan)
        body = encode_activation(seg.module(x), plan["activation_bits"], plan["plan_id"])
        pid, sid = plan["plan_id"], plan["segment_id"]
        req = {
            "model": "mnist-mlp",
            "accuracy_budget": 0.02,
            "device": {"clock_hz": 2e9},
            "weights": {"time": 1, "energy": 1, "cost": 100},
        }
        json_type = {"Content-Type": "application/json"}
        requests = [  # name, method, path, body, headers
            ("plan", "POST", "/v1/plan", json.dumps(req).encode(), json_type),
            (
                f"segment (not cached, {plan['segment_bytes']} B)",
                "GET",
                f"/v1/segment/{pid}",
                b"",
                {},
            ),
            (
                "segment (cached, 304)",
                "GET",
                f"/v1/segment/{pid}",
                b"",
                {"If-None-Match": f'"{sid}"'},
            ),
            (
                f"infer (p={plan['partition_point']}, {len(body)} B body)",
                "POST",
                f"/v1/infer/{pid}",
                body,
                {"Content-Type": "application/octet-stream"},
            ),
        ]
        label = "plain qpart serve" if mode == "uvicorn" else f"{mode} Ray Serve replicas"
        load = (
            f"wrk, 1 thread, {args.clients} connections"
            if args.load == "wrk"
            else f"{args.clients} httpx client threads"
        )
        print(f"\n{label}: loopback, {load}, {args.seconds:.0f} s each")
        print(f"{'endpoint':<32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        measured = {}
        for name, method, path, content, headers in requests:
            if args.load == "wrk":
                measured[name] = _wrk_rate(
                    url + path, method, content, headers, args.seconds, args.clients
                )
            else:
                measured[name] = _rate(
                    lambda c, m=method, p=path, b=content, h=headers: c.request(
                        m, url + p, content=b, headers=h
                    ),
                    args.seconds,
                    args.clients,
                )
            rps, p50, p99 = measured[name]
            print(f"{name:<32} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f}")
        # end-to-end breakdown of one device request (a fresh device: the first request
        # fetches the segment, the others find it cached)
        phone.close()
        phone = DeviceClient(url, DeviceProfile(clock_hz=2e9), weights=ObjectiveWeights(1, 1, 100))
        res = [phone.run(x, "mnist-mlp", 0.02) for _ in range(50)]
        med = {
            k: 1e3 * statistics.median(getattr(r, k) for r in res[1:])
            for k in (
                "plan_s",
                "segment_s",
                "device_s",
                "quantize_s",
                "infer_s",
                "server_s",
                "total_s",
            )
        }
        print(
            "\nend-to-end, one digit, segment cached (median of 49, ms): "
            + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in med.items())
        )
        first = res[0]
        print(
            f"first request (segment fetched, {first.segment_bytes} B): total "
            f"{1e3 * first.total_s:.2f} ms, segment {1e3 * first.segment_s:.2f} ms"
        )
        phone.close()
        return measured
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
