"""The PNG figures of ``qpart reproduce``: the analogues of the paper's Figs. 5-10 and the
mean objective over the random requests, drawn with matplotlib (Agg) from one
:class:`.results.ReproductionResults`."""

from __future__ import annotations

from pathlib import Path

from ...simulation.baselines import SCHEMES
from .results import ReproductionResults

LABELS = {
    "qpart": "QPART",
    "closed_form": "closed form (one-shot)",
    "uniform": "uniform width",
    "pruning": "magnitude pruning",
    "autoencoder": "autoencoder",
    "no_opt": "no optimization",
}
STYLES = {
    "qpart": ("C0", "o", "-"),
    "closed_form": ("C1", "s", "--"),
    "uniform": ("C2", "^", "--"),
    "pruning": ("C3", "v", ":"),
    "autoencoder": ("C4", "D", ":"),
    "no_opt": ("C7", "x", "-."),
}


def _plot_schemes(plt, rows, schemes, key, ylabel, title, path, scale=1.0, log=True):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for sc in schemes:
        pts = sorted((r["partition_point"], r[key] * scale) for r in rows if r["scheme"] == sc)
        color, marker, ls = STYLES[sc]
        ax.plot(
            [p for p, _ in pts],
            [v for _, v in pts],
            marker=marker,
            ls=ls,
            color=color,
            label=LABELS[sc],
        )
    ax.set_xlabel("partition point p (layers on the device)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig5(plt, rows: list[dict], path: Path) -> None:
    """Time, energy and server cost of QPART and no optimization per partition point."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, lab in zip(
        axes,
        ("total_time_s", "total_energy_j", "server_cost"),
        ("time (ms)", "device energy (mJ)", "server cost (x1e-3)"),
    ):
        for sc in ("qpart", "no_opt"):
            pts = sorted((r["partition_point"], r[key] * 1e3) for r in rows if r["scheme"] == sc)
            color, marker, ls = STYLES[sc]
            ax.plot(
                [p for p, _ in pts],
                [v for _, v in pts],
                marker=marker,
                ls=ls,
                color=color,
                label=LABELS[sc],
            )
        ax.set_xlabel("partition point p")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 5 analogue: MNIST MLP, 1% budget, Table II profiles", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig6(plt, fig6: list[dict], fp32_all: int, path: Path) -> None:
    """Parameter size (all layers) of QPART and tuned uniform widths per accuracy level."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    xs = [100 * r["level"] for r in fig6]
    ax.plot(xs, [r["qpart_bytes"] / 1024 for r in fig6], "o-", color="C0", label="QPART")
    ax.plot(
        xs,
        [r["uniform_bytes"] / 1024 for r in fig6],
        "^--",
        color="C2",
        label="uniform width (tuned)",
    )
    ax.axhline(fp32_all / 1024, color="C7", ls="-.", label="float32")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("allowed accuracy degradation (%)")
    ax.set_ylabel("parameter size, all 6 layers (KiB)")
    ax.set_title("Fig. 6 analogue: parameter size vs accuracy requirement", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_figures(results: ReproductionResults, figs_dir: Path) -> None:
    """Draws every figure of ``results`` as a PNG (dpi 100) into ``figs_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = Path(figs_dir)
    figs.mkdir(parents=True, exist_ok=True)
    rows = results.rows
    L = results.profile.num_layers
    _fig5(plt, rows, figs / "fig5_costs_vs_partition.png")
    _fig6(
        plt,
        results.fig6,
        results.profile.weight_payload_bytes(L, [None] * L),
        figs / "fig6_size_vs_accuracy.png",
    )
    _plot_schemes(
        plt,
        rows,
        SCHEMES,
        "objective",
        "objective J",
        "Fig. 7 analogue: objective per scheme",
        figs / "fig7_objective.png",
    )
    _plot_schemes(
        plt,
        rows,
        SCHEMES,
        "total_time_s",
        "total time (ms)",
        "Fig. 8 analogue: time per scheme",
        figs / "fig8_time.png",
        1e3,
    )
    _plot_schemes(
        plt,
        rows,
        SCHEMES,
        "total_energy_j",
        "device energy (mJ)",
        "Fig. 9 analogue: energy per scheme",
        figs / "fig9_energy.png",
        1e3,
    )
    _plot_schemes(
        plt,
        rows,
        SCHEMES,
        "payload_bytes",
        "payload D_w + D_a (KiB)",
        "Fig. 10 analogue: communication payload per scheme",
        figs / "fig10_payload.png",
        1 / 1024,
    )
    _plot_schemes(
        plt,
        results.per_point,
        SCHEMES,
        "objective",
        "mean objective J",
        f"Mean objective over {results.size.requests} random requests",
        figs / "sim_objective.png",
    )
