"""Calibration time, this tree against a baseline commit ("today's code"), in the same run.

    PYTHONPATH=python python benchmarks/bench_calibration.py [--baseline 02c8cff] \
        [--rounds 1] [--quick] [--json benchmarks/results/calibration.json]

For each workload (the MNIST MLP on 2000 training digits, a ``mnist_cnn``-style CNN on 512
digits, the residual CNN ``mnist-resnet`` on 512 held-out digits and a random-weight
ResNet-18-shaped CNN, 21 layers, on 256 inputs of 32x32) the baseline and this tree
calibrate the same model on the same inputs in separate processes, interleaved per round,
each with its own default thread setting (the baseline: one thread; this tree: torch's
default, all cores); ``--also-threads 1`` adds a run of this tree with one thread. The
baseline tree is ``git archive`` of ``--baseline`` (default: the commit this work started
from). Prediction quality is compared with one function for both calibrations: every
pattern of the (unrefined) table is measured on held-out inputs, and the mean absolute
error between its measured disagreement rate and its predicted loss is reported. Not a
test: numbers depend on the machine and its load (run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "02c8cff"
RESNET_FILE = "QPART_BENCH_RESNET_FILE"


# The residual CNN of ``qpart.workloads.models`` (same state-dict keys), defined here so that
# a baseline tree without it calibrates the same network.
class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ResidualCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1, self.layer2, self.layer3 = _Block(8, 8), _Block(8, 16, 2), _Block(16, 32, 2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _save_resnet_workload(path: str) -> None:
    """The trained ``mnist-resnet`` of the zoo (this tree) with its held-out calibration
    digits and the test digits, for every process of the run."""
    from qpart.workloads.zoo import builtin_model

    bm = builtin_model("mnist-resnet", seed=0)
    torch.save({"state": bm.model.state_dict(), "x": bm.calibration, "x_held": bm.x_test}, path)


# ------------------------------------------------------------------------- workloads
def _workload(name: str, quick: bool):
    """``(model, x_calib, x_heldout)`` of a workload, deterministic."""
    import torch

    torch.manual_seed(0)
    if name == "mlp":
        from qpart.workloads.data import load_mnist
        from qpart.workloads.models import trained_mnist_mlp

        data = load_mnist(seed=0)
        model = trained_mnist_mlp(seed=0, progress=False)
        n = 500 if quick else 2000
        return model.eval(), data.x_train[:n], data.x_test
    if name == "cnn":
        from qpart.workloads.data import load_mnist
        from qpart.workloads.models import mnist_cnn, train_classifier

        data = load_mnist(seed=0)
        x = data.x_train.reshape(-1, 1, 28, 28)
        model = mnist_cnn()
        train_classifier(model, x, data.y_train, epochs=1, seed=0, progress=False)
        n = 128 if quick else 512
        return model.eval(), x[:n], data.x_test.reshape(-1, 1, 28, 28)
    if name == "resnet":  # the zoo's trained weights and digits, saved by the parent
        saved = torch.load(os.environ[RESNET_FILE], weights_only=True)
        model = _ResidualCNN()
        model.load_state_dict(saved["state"])
        n = 128 if quick else 512
        return model.eval(), saved["x"][:n], saved["x_held"]
    if name == "resnet18":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from test_bench_planner import resnet18_shaped

        model = resnet18_shaped().eval()
        with torch.no_grad():  # a random network: scale the head so logits are spread
            model[-1].weight.mul_(20.0)
        gen = torch.Generator().manual_seed(1)
        n = 16 if quick else 256
        x = torch.randn(n + 256, 3, 32, 32, generator=gen).relu()
        return model, x[:n], x[n:]
    raise ValueError(name)


def _child(name: str, quick: bool, out: str, threads: int | None) -> None:
    """Runs in the child process: calibrates with the imported tree's defaults (or
    ``threads`` torch threads)."""
    import torch

    from qpart.core.profile import profile
    from qpart.planning.calibration import calibrate

    model, x, _ = _workload(name, quick)
    prof = profile(model, x[:2])
    kw = {} if threads is None else {"threads": threads}
    seen = []
    orig = torch.set_num_threads

    def spy(n):  # records the thread count calibrate() runs with
        seen.append(n)
        orig(n)

    torch.set_num_threads = spy
    t = time.perf_counter()
    calib = calibrate(model, x, prof=prof, progress=False, **kw)
    seconds = time.perf_counter() - t
    torch.set_num_threads = orig
    used = seen[0] if len(seen) > 1 else torch.get_num_threads()
    calib.save(out + ".calib.json")
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "threads": used}, f)


def _run(tree_python: Path, name: str, quick: bool, threads: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        env = {**os.environ, "PYTHONPATH": f"{tree_python}{os.pathsep}{ROOT / 'benchmarks'}"}
        cmd = [sys.executable, __file__, "--child", name, "--out", out]
        cmd += ["--quick"] if quick else []
        cmd += [] if threads is None else ["--threads", str(threads)]
        subprocess.run(cmd, check=True, env=env)
        with open(out) as f:
            res = json.load(f)
        with open(out + ".calib.json") as f:
            res["calibration"] = json.load(f)
    return res


def _quality(name: str, quick: bool, calib_doc: dict) -> dict:
    """Mean |measured held-out disagreement - predicted loss| over the unrefined table."""
    from qpart.core.profile import profile
    from qpart.planning.heldout import HeldOutAcceptance
    from qpart.planning.noise_model import Calibration
    from qpart.planning.table import PatternTable

    model, x, x_held = _workload(name, quick)
    prof = profile(model, x[:2])
    calib = Calibration.from_dict(calib_doc)
    table = PatternTable.build(prof, calib, acceptance=HeldOutAcceptance(prof, x_held))
    pats = [p for p in table.patterns if p.selection_loss is None and p.accuracy_budget < 1.0]
    pats = pats[: len(calib.budgets) * len(prof.valid_points)]  # the model's patterns only
    errs = [abs(p.measured_loss - p.predicted_loss) for p in pats]
    over = [p.measured_loss > p.accuracy_budget for p in pats]
    return {
        "patterns": len(pats),
        "mean_abs_error": sum(errs) / max(len(errs), 1),
        "over_level": sum(over) / max(len(over), 1),
        "budgets": sorted(calib.budgets.items()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--workloads", default="mlp,cnn,resnet,resnet18")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for this tree's calibration (default: its default)",
    )
    ap.add_argument(
        "--also-threads",
        type=int,
        default=None,
        help="also run this tree with this many torch threads (reported as new_<n>thr)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.quick, args.out, args.threads)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "python"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {"baseline": Path(tmp) / "python", "new": ROOT / "python"}
        if "resnet" in args.workloads.split(","):
            os.environ[RESNET_FILE] = os.path.join(tmp, "resnet.pt")
            _save_resnet_workload(os.environ[RESNET_FILE])
        threads_of = {"baseline": None, "new": args.threads}
        if args.also_threads is not None:
            extra = f"new_{args.also_threads}thr"
            trees[extra], threads_of[extra] = ROOT / "python", args.also_threads
        rows = []
        for name in args.workloads.split(","):
            runs = {k: [] for k in trees}
            for _ in range(args.rounds):
                for which, tree in trees.items():
                    runs[which].append(_run(tree, name, args.quick, threads_of[which]))
            row = {"workload": name}
            for which in trees:
                best = min(runs[which], key=lambda r: r["seconds"])
                row[which] = {
                    "seconds": [r["seconds"] for r in runs[which]],
                    "threads": best["threads"],
                    "quality": _quality(name, args.quick, best["calibration"]),
                }
            for which in trees:
                if which != "baseline":
                    row[f"speedup_{which}"] = min(row["baseline"]["seconds"]) / min(
                        row[which]["seconds"]
                    )
            row["speedup"] = row["speedup_new"]
            rows.append(row)
            if args.json:  # after every workload: a cut-short run keeps what it measured
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                with open(args.json, "w") as f:
                    doc = {"baseline": args.baseline, "quick": args.quick, "rows": rows}
                    json.dump(doc, f, indent=1)
            b, n = row["baseline"], row["new"]
            print(
                f"{name:<9} baseline {min(b['seconds']):8.2f} s ({b['threads']} thr)  new "
                f"{min(n['seconds']):8.2f} s ({n['threads']} thr)  speedup "
                f"{row['speedup']:5.2f}x  |pred-meas| {b['quality']['mean_abs_error']:.4f} -> "
                f"{n['quality']['mean_abs_error']:.4f}  over level "
                f"{b['quality']['over_level']:.2f} -> {n['quality']['over_level']:.2f}",
                flush=True,
            )
            for which in trees:
                if which not in ("baseline", "new"):
                    e = row[which]
                    print(
                        f"{'':<9} {which}: {min(e['seconds']):8.2f} s  speedup "
                        f"{row['speedup_' + which]:5.2f}x  |pred-meas| "
                        f"{e['quality']['mean_abs_error']:.4f}  over level "
                        f"{e['quality']['over_level']:.2f}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
