"""``qpart device``: a device client sending MNIST test digits through a QPART server, one
JSON line per digit with measured and predicted bytes and times."""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx

from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from ..serving.device import DeviceClient, ServerError, ServerUnreachable
from ..workloads.data import load_mnist


def run_device(args: argparse.Namespace) -> int:
    """Runs ``qpart device`` for parsed CLI ``args``; returns the exit status."""
    t, e, c = args.weights
    data = load_mnist(seed=args.seed)
    xs, ys = data.x_test[: args.digits], data.y_test[: args.digits]
    client = DeviceClient(
        args.url,
        DeviceProfile(args.cycles_per_mac, args.clock_hz),
        ChannelState(args.uplink_bps, args.downlink_bps),
        ObjectiveWeights(t, e, c),
        args.memory_bytes,
        token=args.token or os.environ.get("QPART_TOKEN") or None,
        cache_dir=args.segment_cache,
    )
    try:
        with client:
            for i in range(xs.shape[0]):
                r = client.run(xs[i : i + 1], args.model, args.budget)
                p = r.plan
                print(
                    json.dumps(
                        {
                            "digit": int(ys[i]),
                            "prediction": r.predictions[0],
                            "plan_id": p["plan_id"],
                            "partition_point": p["partition_point"],
                            "bits": p["bits"],
                            "activation_bits": p["activation_bits"],
                            "segment_bytes_received": r.segment_bytes,
                            "activation_bytes_sent": r.activation_bytes,
                            "predicted_activation_bytes": r.predicted_activation_bytes,
                            "predicted_total_time_s": p["predicted"]["total_time_s"],
                            "measured_total_s": round(r.total_s, 6),
                            "measured_device_s": round(r.device_s, 6),
                            "measured_server_s": round(r.server_s, 6),
                        }
                    ),
                    flush=True,
                )
    except ServerError as exc:
        print(f"qpart device: error: {exc}", file=sys.stderr)
        return 1
    except ServerUnreachable as exc:
        print(f"qpart device: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:
        print(f"qpart device: error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0
