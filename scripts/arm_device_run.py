"""One device's side of the ARM agreement check (run by scripts/arm_device_check.sh).

Runs the device flow of ``qpart.serving.device.DeviceClient`` against a QPART server - plan,
fetch the segment, run it locally, pack and send the cut activation, get the answer - for
seeded random inputs, and writes what the check compares to a JSON file: per input the plan,
the cut activation, the SHA-256 of the packed activation body and the server's output.
The same command runs on x86 and, under qemu-aarch64, on the emulated ARM device.

    python arm_device_run.py --url URL --model mnist-mlp --budget 0.01 --inputs 3 --out F
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time

import torch

from qpart.core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from qpart.serving.device import DeviceClient
from qpart.serving.wire import encode_activation


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def int8_probe(seed: int) -> list[dict]:
    """The integer linear path (``act_int8=True``) on seeded weights and inputs, batch 1 and
    5, 3 and 4 bits: docs/OPS.md promises bit-exact results on every ISA, and on aarch64 it
    runs ``sdot`` or the plain NEON kernel by CPU (the segments use the float path)."""
    from qpart_kernels import QPartLinear

    gen = torch.Generator().manual_seed(seed + 1)
    lin = torch.nn.Linear(256, 48)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(48, 256, generator=gen) * 2 - 1)
        lin.bias.copy_(torch.rand(48, generator=gen) - 0.5)
    out = []
    for bits in (3, 4):
        q = QPartLinear.from_float(lin, bits, act_int8=True)
        for batch in (1, 5):
            x = torch.rand(batch, 256, generator=gen) * 4 - 2
            with torch.no_grad():
                y = q(x)
            out.append(
                {
                    "bits": bits,
                    "batch": batch,
                    "weight_sha": _sha(lin.weight.detach()),
                    "input_sha": _sha(x),
                    "output": y.reshape(-1).tolist(),
                }
            )
    return out


def run(args: argparse.Namespace) -> dict:
    """Runs every (model, budget) on ``args.inputs`` seeded inputs; returns the record."""
    import qpart_kernels
    from qpart_kernels import cpu_isa

    record: dict = {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "extension": qpart_kernels.extension_loaded(),
        "cpu_isa": cpu_isa.get_cpu_isa(),
        "runs": [],
        "int8_probe": int8_probe(args.seed),
    }
    client = DeviceClient(
        args.url,
        DeviceProfile(clock_hz=args.clock_hz),
        ChannelState(200e6, 200e6),
        ObjectiveWeights(1.0, 1.0, args.cost_weight),
        None,
    )
    with client:
        shapes = {m["id"]: tuple(m["input_shape"]) for m in client.models()}
        for model in args.model:
            gen = torch.Generator().manual_seed(args.seed)
            xs = torch.rand(args.inputs, *shapes[model], generator=gen)
            for budget in args.budget:
                t0 = time.perf_counter()
                plan = client.plan(model, budget)
                seg, _ = client.segment(plan)
                for i in range(args.inputs):
                    x = xs[i : i + 1]
                    with torch.no_grad():
                        cut = seg.module(x)
                    body_sha = None
                    if plan["activation_bits"] is not None:
                        body = encode_activation(cut, int(plan["activation_bits"]), plan["plan_id"])
                        body_sha = hashlib.sha256(body).hexdigest()
                    r = client.infer(plan, seg, x)
                    record["runs"].append(
                        {
                            "model": model,
                            "budget": budget,
                            "input": i,
                            "input_sha": _sha(x),
                            "plan_id": plan["plan_id"],
                            "partition_point": plan["partition_point"],
                            "bits": plan["bits"],
                            "activation_bits": plan["activation_bits"],
                            "cut": cut.reshape(-1).tolist(),
                            "body_sha": body_sha,
                            "output": r.output.reshape(-1).tolist(),
                            "prediction": r.predictions[0],
                        }
                    )
                print(
                    f"    {record['machine']} {model} budget={budget}: p={plan['partition_point']} "
                    f"bits={plan['bits']} a={plan['activation_bits']} "
                    f"{args.inputs} inputs in {time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
    return record


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--budget", type=float, action="append", required=True)
    ap.add_argument("--inputs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    # a phone-like device (tests/serving/test_e2e.py's PHONE): the plans split the models
    ap.add_argument("--clock-hz", type=float, default=2e9)
    ap.add_argument("--cost-weight", type=float, default=100.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.out, "w") as f:
        json.dump(run(args), f)


if __name__ == "__main__":
    main()
