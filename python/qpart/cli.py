"""The ``qpart`` command line.

Each subcommand is one ``_add_<name>`` function that builds its sub-parser and sets a
``handler(args) -> int`` default; adding a command (serve, device, simulate, ...) means
writing such a function and listing it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__

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
            f"invalid group size {text!r}: expected an integer") from None
    if value <= 0 or value % 32 != 0:
        raise argparse.ArgumentTypeError(
            f"group size must be a positive multiple of 32, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be >= 0, got {value}")
    return value


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imported lazily: keeps `qpart --help` fast

    run_demo(args)
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="quantize a trained MNIST MLP at 1..8 bits and tabulate accuracy vs payload",
        description="Trains (or loads from the cache) the six-layer MNIST MLP, quantizes it "
        "at each bit-width with the QPART kernels and prints test accuracy and payload size.",
    )
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the data split and training (default: 0)")
    parser.add_argument("--group-size", type=_group_size, default=None, metavar="N",
                        help="quantization group size, a multiple of 32 (default: one scale "
                        "per output channel; layers it does not divide stay per-channel)")
    parser.add_argument("--widths", type=parse_widths, default=tuple(range(1, 9)),
                        metavar="LIST", help="bit-widths to run, e.g. '1,2,4,8' or '1-8' "
                        "(default: 1-8)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="where trained weights are cached (default: $QPART_CACHE or "
                        "~/.cache/qpart)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide the training progress bar")
    parser.set_defaults(handler=_run_demo)


#: Sub-command registrars, in the order ``qpart --help`` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_demo]


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
