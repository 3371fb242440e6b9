"""The ``qpart`` command line.

Each subcommand is one ``_add_<name>`` function that builds its sub-parser and sets a
``handler(args) -> int`` default; adding a command (serve, device, simulate, ...) means
writing such a function and listing it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

MIN_BITS, MAX_BITS = 1, 8


def parse_widths(text: str) -> tuple[int, ...]:
    """Parses ``"1,2,4,8"`` or ranges like ``"1-8"`` / ``"2,4-6"`` into sorted unique widths
    in 1..8; raises ``argparse.ArgumentTypeError`` otherwise."""
    widths: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, sep, high = part.partition("-")
        try:
            values = range(int(low), int(high) + 1) if sep else [int(part)]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid width {part!r} in {text!r}: expected integers such as '1,2,4,8' or '1-8'"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"empty width range {part!r}")
        for bits in values:
            if not MIN_BITS <= bits <= MAX_BITS:
                raise argparse.ArgumentTypeError(
                    f"width {bits} is out of range: bit-widths must be in {MIN_BITS}..{MAX_BITS}"
                )
            widths.add(bits)
    return tuple(sorted(widths))


def _group_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid group size {text!r}: expected an integer"
        ) from None
    if value <= 0 or value % 32 != 0:
        raise argparse.ArgumentTypeError(
            f"group size must be a positive multiple of 32, got {value}"
        )
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be >= 0, got {value}")
    return value


def _run_sweep(args: argparse.Namespace) -> int:
    from .apps.sweep import run_sweep  # imported lazily: keeps `qpart --help` fast

    run_sweep(args)
    return 0


def _cache_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=_seed, default=0, help="seed of the data split and training (default: 0)"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="where trained weights and calibrations are cached (default: "
        "$QPART_CACHE or ~/.cache/qpart)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )


def _threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="torch intra-op threads (default: 1)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _add_sweep(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="quantize a trained MNIST MLP at 1..8 bits and tabulate accuracy vs payload",
        description="Trains (or loads from the cache) the six-layer MNIST MLP, quantizes it "
        "at each bit-width with the QPART kernels and prints test accuracy and payload size.",
    )
    _cache_args(parser)
    parser.add_argument(
        "--group-size",
        type=_group_size,
        default=None,
        metavar="N",
        help="quantization group size, a multiple of 32 (default: one scale "
        "per output channel; layers it does not divide stay per-channel)",
    )
    parser.add_argument(
        "--widths",
        type=parse_widths,
        default=tuple(range(1, 9)),
        metavar="LIST",
        help="bit-widths to run, e.g. '1,2,4,8' or '1-8' (default: 1-8)",
    )
    parser.set_defaults(handler=_run_sweep)


def _run_demo(args: argparse.Namespace) -> int:
    from .apps.demo import run_demo

    run_demo(args)
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="end-to-end serving demo: server + four devices on loopback",
        description="Trains or loads the MNIST MLP, calibrates it (cached), builds the "
        "pattern table, starts the QPART server on a loopback port and runs four devices "
        "with different profiles, channels and budgets; prints plans, payloads, predicted "
        "vs measured accuracy loss and times.",
    )
    _cache_args(parser)
    parser.add_argument(
        "--digits",
        type=_positive_int,
        default=4,
        metavar="N",
        help="test digits each device sends, one request each (default: 4)",
    )
    parser.add_argument(
        "--calib-samples",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="calibration inputs used per model (default: 2000 for the MNIST MLP; at most "
        "this many of a model's calibration inputs otherwise)",
    )
    parser.set_defaults(handler=_run_demo)


def _run_serve(args: argparse.Namespace) -> int:
    if args.replicas is not None or args.ray_address:
        from .apps.cluster import run_cluster

        if args.replicas is None:
            args.replicas = 1
        return run_cluster(args)
    from .apps.serve import run_serve

    return run_serve(args)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the QPART server (HTTP, FastAPI + uvicorn)",
        description="Serves the models named by --model / --config (default: the MNIST MLP); "
        "each is captured, calibrated and tabulated once (cached on disk under its weights' "
        "digest). Routes: /v1/health, /v1/models, /v1/plan, /v1/segment/{plan_id}, "
        "/v1/infer/{plan_id}; OpenAPI at /docs.",
    )
    _cache_args(parser)
    parser.add_argument(
        "--model",
        action="append",
        metavar="ID=SPEC",
        help="serve a model (repeatable). SPEC: a built-in id (mnist-mlp, mnist-cnn, "
        "mnist-resnet), 'package.module:factory' (returns a qpart.ModelSpec or (model, "
        "example, calibration inputs)), or 'PROGRAM.pt2:CALIBRATION.npy|.safetensors'. "
        "A built-in id alone serves it under its own id",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="TOML",
        help="serve the [models.ID] tables of a TOML file (builtin / factory / program + "
        "calibration, optional description)",
    )
    parser.add_argument(
        "--int8-activations",
        action="store_true",
        help="devices run the quantized layers on int8 activations (the integer kernels); "
        "calibration and the held-out acceptance use the same numerics (a config table's "
        "int8_activations overrides it per model)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=_positive_int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--calib-samples",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="calibration inputs used per model (default: 2000 for the MNIST MLP; at most "
        "this many of a model's calibration inputs otherwise)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' (default: $QPART_TOKEN; none = no auth)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=4 * 1024 * 1024,
        metavar="N",
        help="largest accepted request body (default: 4 MiB)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="requests processed at once; others wait briefly, then get 503 (default: 8)",
    )
    parser.add_argument(
        "--replicas",
        type=_positive_int,
        default=None,
        metavar="N",
        help="serve N replicas behind one address with Ray Serve on a local Ray instance "
        "(loopback); needs pip install 'qpart[cluster]'",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="deploy onto an existing Ray cluster (e.g. 'auto' or 'ray://head:10001') "
        "instead of a local instance",
    )
    parser.add_argument(
        "--queue-timeout-s",
        type=_positive_float,
        default=0.5,
        metavar="S",
        help="how long a request waits for a slot before its 503 (default: 0.5)",
    )
    parser.add_argument(
        "--body-timeout-s",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="a request body must arrive within this time, else 408 (default: 10)",
    )
    parser.add_argument(
        "--max-uploads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="request bodies received at once; more get 503 (default: 4 x max-concurrency)",
    )
    _threads_arg(parser)
    parser.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(handler=_run_serve)


def _run_device(args: argparse.Namespace) -> int:
    from .apps.device import run_device

    return run_device(args)


def _weights(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected three numbers >= 0 'time,energy,cost', got {text!r}"
        )
    return values  # type: ignore[return-value]


def _add_device(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "device",
        help="run a QPART device against a server (inputs from a file, or MNIST digits)",
        description="Asks the server for a plan, fetches and caches the quantized segment, "
        "runs it on the QPART kernels, sends the packed cut activation and prints one JSON "
        "line per input with the prediction and measured and predicted bytes and times.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--model", default="mnist-mlp", help="model id (default: mnist-mlp)")
    parser.add_argument(
        "--budget",
        type=_positive_float,
        default=0.01,
        help="accuracy budget as a fraction (default: 0.01)",
    )
    parser.add_argument(
        "--input",
        default=None,
        metavar="FILE",
        help="inputs to send, one request per row (.npy, or .safetensors with one tensor or "
        "one named 'inputs'; per-sample shape as /v1/models says). Default: MNIST test digits",
    )
    parser.add_argument(
        "--digits",
        type=_positive_int,
        default=None,
        metavar="N",
        help="how many inputs to send (default: 4 digits, or every row of --input)",
    )
    parser.add_argument(
        "--print-output",
        action="store_true",
        help="add the model output of each input to its JSON line",
    )
    parser.add_argument("--seed", type=_seed, default=0, help="data split seed (default: 0)")
    parser.add_argument("--clock-hz", type=_positive_float, default=200e6)
    parser.add_argument("--cycles-per-mac", type=_positive_float, default=5.0)
    parser.add_argument("--uplink-bps", type=_positive_float, default=200e6)
    parser.add_argument("--downlink-bps", type=_positive_float, default=200e6)
    parser.add_argument("--memory-bytes", type=_positive_float, default=None)
    parser.add_argument(
        "--weights",
        type=_weights,
        default=(1.0, 1.0, 1.0),
        metavar="T,E,C",
        help="objective weights (default: 1,1,1)",
    )
    parser.add_argument("--token", default=None, help="bearer token (default: $QPART_TOKEN)")
    parser.add_argument(
        "--segment-cache",
        default=None,
        metavar="DIR",
        help="keep fetched segments here (verified by sha256)",
    )
    parser.set_defaults(handler=_run_device)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected fractions in (0, 1) like '0.005,0.01', got {text!r}"
        )
    return values


def _schemes(text: str) -> tuple[str, ...]:
    from .apps.simulate import scheme_names

    known = scheme_names()

    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown scheme(s) {bad}; choose from {','.join(known)}")
    return names


def _run_simulate(args: argparse.Namespace) -> int:
    from .apps.simulate import run_simulate

    return run_simulate(args)


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate many random requests served by QPART and the baselines",
        description="Draws requests (device clock, cycles/MAC, radio power, distance, "
        "bandwidth, Rayleigh fading, accuracy budget; docs/SIMULATION.md) and serves each "
        "with QPART and every baseline on the MNIST MLP; writes requests.csv (one row per "
        "request and scheme) and summary.json.",
    )
    _cache_args(parser)
    parser.add_argument(
        "--model",
        default="mnist-mlp",
        choices=["mnist-mlp", "mnist-cnn", "mnist-resnet"],
        help="built-in workload to simulate (default: mnist-mlp)",
    )
    parser.add_argument(
        "--requests",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="number of requests (default: 1000)",
    )
    parser.add_argument(
        "--budgets",
        type=_fractions,
        default=(0.005, 0.01, 0.02),
        metavar="LIST",
        help="accuracy budgets drawn uniformly (default: "
        "0.005,0.01,0.02; each must be >= 0.001, the smallest calibrated level)",
    )
    parser.add_argument(
        "--schemes",
        type=_schemes,
        default=None,
        metavar="LIST",
        help="comma-separated schemes (default: all: qpart, closed_form, "
        "uniform, pruning, autoencoder, no_opt)",
    )
    parser.add_argument(
        "--out", default="simulation", metavar="DIR", help="output folder (default: ./simulation)"
    )
    parser.add_argument(
        "--calib-samples",
        type=_positive_int,
        default=400,
        metavar="N",
        help="held-out digits (of the 1000 the model is not trained on; the last 600 are "
        "the acceptance split) used for calibration and refinement (default: 400, at most "
        "400)",
    )
    _threads_arg(parser)
    parser.add_argument(
        "--held-weights",
        action="store_true",
        help="devices hold their segments: no weight download per request "
        "(default: the weights are downloaded for every request, as in the paper)",
    )
    parser.add_argument(
        "--memory-kib",
        type=_kib_range,
        default=None,
        metavar="LO,HI",
        help="device memory drawn log-uniformly from LO..HI KiB per request (default: unbounded)",
    )
    parser.set_defaults(handler=_run_simulate)


def _kib_range(text: str) -> tuple[float, float]:
    """``"LO,HI"`` (KiB, 0 < LO <= HI) for ``--memory-kib``."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in KiB, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"need 0 < LO <= HI, got {text!r}")
    return lo, hi


def _run_reproduce(args: argparse.Namespace) -> int:
    from .apps.reproduce.run import run_reproduce

    return run_reproduce(args)


def _add_reproduce(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's tables and figures (MNIST MLP, small CNNs)",
        description="Generates the analogues of the paper's Table III, Table IV and Figs. "
        "5-10 (PNG) plus a random-request simulation, and writes OUT/RESULTS.md.",
    )
    _cache_args(parser)
    parser.add_argument(
        "--out",
        default="docs",
        metavar="DIR",
        help="where RESULTS.md and figures/ go (default: docs)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="raw CSV/JSON (default: OUT/data with --quick, else build/reproduce)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced size for CI (seconds): fewer calibration digits, "
        "epochs and requests; every table and figure is still produced",
    )
    _threads_arg(parser)
    parser.set_defaults(handler=_run_reproduce)


#: Sub-command registrars, in the order ``qpart --help`` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_serve,
    _add_device,
    _add_sweep,
    _add_simulate,
    _add_reproduce,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``qpart`` parser with every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="qpart",
        description="QPART: quantized partitioning for edge inference.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qpart`` script; returns the exit status.

    Bad options exit through argparse (``SystemExit`` with status 2); a missing optional
    dependency is reported on stderr with status 1.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    try:
        return args.handler(args)
    except ImportError as exc:
        print(f"qpart {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
