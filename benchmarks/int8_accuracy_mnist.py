"""Accuracy impact of the integer path (int8 activations) on the trained MNIST MLP.

    python benchmarks/int8_accuracy_mnist.py [--seeds 0,1,2]

For each weight width (2, 3, 4, 8; per-channel, and group 32 in every layer whose
in_features allows it) prints
the test accuracy with float activations (``act_int8=False``) and with per-token int8
activations (``act_int8=True``), next to the float model's, plus the max |logit| change.
"""

from __future__ import annotations

import argparse
import copy

import torch

import qpart_kernels as qk
from qpart.core.metrics import accuracy
from qpart.workloads.data import load_mnist
from qpart.workloads.models import trained_mnist_mlp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--bits", default="2,3,4,8")
    args = ap.parse_args()
    print(
        "| seed | bits | group | float model | qpart float-act | qpart int8-act | "
        "delta (pp) | max abs logit change |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for seed in [int(s) for s in args.seeds.split(",")]:
        data = load_mnist(seed)
        model = trained_mnist_mlp(seed=seed, progress=False)
        base = accuracy(model, data.x_test, data.y_test)
        for bits in [int(b) for b in args.bits.split(",")]:
            for group in (None, 32):
                # group 32 where a layer's in_features allows it (not the 784-wide input layer)
                gs = (
                    group
                    if group is None
                    else {
                        name: group if mod.in_features % group == 0 else None
                        for name, mod in model.named_modules()
                        if isinstance(mod, torch.nn.Linear)
                    }
                )
                flt = qk.quantize_model(copy.deepcopy(model), bits, gs)
                i8 = qk.quantize_model(copy.deepcopy(model), bits, gs, act_int8=True)
                a_f = accuracy(flt, data.x_test, data.y_test)
                a_i = accuracy(i8, data.x_test, data.y_test)
                with torch.inference_mode():
                    dl = float((flt(data.x_test) - i8(data.x_test)).abs().max())
                print(
                    f"| {seed} | {bits} | {group or 'channel'} | {100 * base:.1f} | "
                    f"{100 * a_f:.1f} | {100 * a_i:.1f} | {100 * (a_i - a_f):+.1f} | {dl:.3f} |"
                )


if __name__ == "__main__":
    main()
