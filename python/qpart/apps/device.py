"""``qpart device``: a device client sending inputs through a QPART server - the rows of
``--input FILE``, or MNIST test digits (shaped as the model expects) - one JSON line per
input with the prediction, measured and predicted bytes and times."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import httpx
import torch

from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from ..serving.device import DeviceClient, ServerError, ServerUnreachable
from ..workloads.data import load_mnist
from .model_specs import SpecError, load_inputs


def _inputs(args: argparse.Namespace, client: DeviceClient) -> tuple[torch.Tensor, list]:
    """The inputs to send and their labels (``None`` when unknown)."""
    info = {m["id"]: m for m in client.models()}
    if args.model not in info:
        raise ServerError(404, f"unknown model {args.model!r}; served: {sorted(info)}")
    shape = tuple(info[args.model]["input_shape"])
    if args.input:
        x = load_inputs(args.input)
        if tuple(x.shape[1:]) != shape:
            raise SpecError(
                f"{args.input}: inputs are {tuple(x.shape[1:])} per sample, model "
                f"{args.model!r} takes {shape}"
            )
        return x[: args.digits] if args.digits else x, [None] * min(
            x.shape[0], args.digits or x.shape[0]
        )
    if math.prod(shape) != 28 * 28:
        raise SpecError(f"model {args.model!r} takes {shape} inputs, not digits: give --input FILE")
    data = load_mnist(seed=args.seed)
    n = args.digits or 4
    return data.x_test[:n].reshape(n, *shape), data.y_test[:n].tolist()


def run_device(args: argparse.Namespace) -> int:
    """Runs ``qpart device`` for parsed CLI ``args``; returns the exit status."""
    t, e, c = args.weights
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
            xs, labels = _inputs(args, client)
            for i in range(xs.shape[0]):
                r = client.run(xs[i : i + 1], args.model, args.budget)
                p = r.plan
                line = {
                    "input": i,
                    **({"label": int(labels[i])} if labels[i] is not None else {}),
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
                if args.print_output:
                    line["output"] = [round(v, 6) for v in r.output[0].tolist()]
                print(json.dumps(line), flush=True)
    except SpecError as exc:
        print(f"qpart device: error: {exc}", file=sys.stderr)
        return 2
    except (ServerError, ServerUnreachable) as exc:
        print(f"qpart device: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, httpx.HTTPError) as exc:
        print(f"qpart device: error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0
