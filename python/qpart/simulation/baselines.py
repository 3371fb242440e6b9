"""Offloading schemes compared by the simulator (docs/SIMULATION.md §3), each a real,
runnable implementation at a given partition point ``p``:

* ``qpart``        - the planner's pattern table: per level the cheapest pattern at ``p``
                     that may serve it (held-out upper bound ``<= a``);
* ``closed_form``  - the paper's one-shot closed form: the continuous KKT widths rounded up,
                     without our integer refinement;
* ``uniform``      - one width for every device layer and the cut activation: the smallest
                     whose held-out upper bound meets the budget (with an acceptance split;
                     else whose selection loss meets the selection rule);
* ``no_opt``       - direct offloading: float32 device segment and float32 activation;
* ``pruning``      - unstructured magnitude pruning of the device layers (same sparsity in
                     each), the largest sparsity accepted as the uniform widths are; the
                     surviving weights ship as float32 values plus a 1-bit mask, the
                     activation as float32;
* ``autoencoder``  - a small linear encoder (device) / decoder + ReLU (server) trained on the
                     model's cut activations (MSE); the code ships as float32.

A :class:`SchemeConfig` carries everything the cost model needs (MACs on each side, exact
payload bytes) and the runnable ``module`` (input -> logits) the executing module measures.
A scheme with no accepted configuration at a point sends the float segment there
(:func:`float_fallback`): the same serving rule for every scheme.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..core.metrics import accuracy
from ..core.profile import FLOAT_BYTES, ModelProfile
from ..core.split import fp32_weight_bytes, quantized_split_model, split_model
from ..planning.acceptance import AcceptanceRule, within
from ..planning.allocation import (
    MAX_BITS,
    MIN_BITS,
    InfeasibleError,
    continuous_allocation,
    noise_of,
)
from ..planning.heldout import HeldOutAcceptance
from ..planning.noise_model import Calibration
from ..planning.solve import Plan, allocation_problem, solve_partition
from ..planning.table import PatternTable

#: Sparsities tried by the pruning baseline (ascending).
PRUNING_GRID = (
    0.0,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.93,
    0.95,
    0.97,
    0.98,
    0.99,
)


@dataclass
class SchemeConfig:
    """One scheme at one partition point: cost features, payloads (bytes, per sample for
    the activation), widths or other knobs (``detail``) and the runnable model."""

    scheme: str
    p: int
    device_macs: int
    server_macs: int
    weight_payload_bytes: int
    activation_payload_bytes: int
    fp32_weight_bytes: int
    fp32_activation_bytes: int
    bits: tuple[int, ...] | None = None
    activation_bits: int | None = None
    detail: dict = field(default_factory=dict)
    module: nn.Module | None = field(default=None, repr=False, compare=False)
    memory_bytes: int = 0

    @property
    def payload_bytes(self) -> int:
        """``D_w + D_a`` (weights downloaded + one activation uploaded)."""
        return self.weight_payload_bytes + self.activation_payload_bytes

    @property
    def weight_ratio(self) -> float:
        """Device-segment weight payload relative to float32 (nan at ``p = 0``)."""
        return (
            self.weight_payload_bytes / self.fp32_weight_bytes
            if self.fp32_weight_bytes
            else float("nan")
        )

    def summary(self) -> dict:
        """JSON-friendly description (no module)."""
        return {
            "scheme": self.scheme,
            "partition_point": self.p,
            "device_macs": self.device_macs,
            "server_macs": self.server_macs,
            "weight_payload_bytes": self.weight_payload_bytes,
            "activation_payload_bytes": self.activation_payload_bytes,
            "fp32_weight_bytes": self.fp32_weight_bytes,
            "fp32_activation_bytes": self.fp32_activation_bytes,
            "bits": None if self.bits is None else list(self.bits),
            "activation_bits": self.activation_bits,
            "memory_bytes": self.memory_bytes,
            **self.detail,
        }


def device_memory(prof: ModelProfile, p: int, w_bytes: int) -> int:
    """Device memory of a segment: its weights (``w_bytes``) plus the peak of live float
    activations while it runs (one sample), as :meth:`ModelProfile.device_memory_bytes`."""
    peak = (
        prof.full_device_peak_activation_elems
        if p == prof.num_layers
        else prof.cuts[p].device_peak_activation_elems
    )
    return int(w_bytes) + FLOAT_BYTES * peak


def _base(
    prof: ModelProfile, scheme: str, p: int, w_bytes: int, a_bytes: int, module: nn.Module, **kw
) -> SchemeConfig:
    return SchemeConfig(
        scheme,
        p,
        prof.device_macs(p),
        prof.server_macs(p),
        int(w_bytes),
        int(a_bytes),
        fp32_weight_bytes(prof, p),
        prof.activation_payload_bytes(p, None),
        module=module,
        memory_bytes=device_memory(prof, p, w_bytes),
        **kw,
    )


def no_opt_config(prof: ModelProfile, p: int) -> SchemeConfig:
    """Direct offloading: float32 weights of layers ``1..p`` and the float32 activation."""
    return _base(
        prof,
        "no_opt",
        p,
        fp32_weight_bytes(prof, p),
        prof.activation_payload_bytes(p, None),
        prof.graph_module,
    )


def quantized_config(
    prof: ModelProfile, scheme: str, p: int, bits: Sequence[int], b_a: int | None, **detail
) -> SchemeConfig:
    """Layers ``1..p`` at ``bits``, cut activation at ``b_a`` (real ``qpart_kernels``)."""
    bits = tuple(int(b) for b in bits)
    b_a = None if p == prof.num_layers else b_a
    return _base(
        prof,
        scheme,
        p,
        prof.weight_payload_bytes(p, bits),
        prof.activation_payload_bytes(p, b_a),
        quantized_split_model(prof, p, bits, b_a),
        bits=bits,
        activation_bits=b_a,
        detail=detail,
    )


def qpart_config(
    prof: ModelProfile, calib: Calibration, p: int, level: float, coefficients: np.ndarray
) -> SchemeConfig:
    """The planner's allocation for accuracy level ``level`` (``C(level)``)."""
    bits, b_a, alloc = solve_partition(prof, calib, p, calib.budget(level), coefficients)
    return quantized_config(prof, "qpart", p, bits, b_a, predicted_noise=alloc.noise, level=level)


def closed_form_config(
    prof: ModelProfile, calib: Calibration, p: int, level: float, coefficients: np.ndarray
) -> SchemeConfig:
    """The paper's one-shot closed form: continuous KKT widths (with bound clipping),
    rounded up to integers (so the budget holds), without the greedy refinement."""
    g, alpha, c = allocation_problem(prof, calib, p, coefficients)
    b_cont, _ = continuous_allocation(g, alpha, c, calib.budget(level))
    bits = np.clip(np.ceil(b_cont - 1e-9), MIN_BITS, MAX_BITS).astype(int)
    b_a = int(bits[p]) if p < prof.num_layers else None
    return quantized_config(
        prof,
        "closed_form",
        p,
        bits[:p],
        b_a,
        predicted_noise=noise_of(g, alpha, bits),
        level=level,
        continuous_bits=[round(float(b), 3) for b in b_cont],
    )


def uniform_sweep(
    prof: ModelProfile,
    p: int,
    x: torch.Tensor,
    y: torch.Tensor,
    widths: Sequence[int] = range(MIN_BITS, MAX_BITS + 1),
) -> dict[int, tuple[SchemeConfig, float]]:
    """Every single width ``b``: ``{b: (config, measured accuracy on (x, y))}``."""
    out = {}
    for b in widths:
        cfg = quantized_config(prof, "uniform", p, [b] * p, b, width=int(b))
        out[int(b)] = (cfg, accuracy(cfg.module, x, y))
    return out


def pick_uniform(
    sweep: dict[int, tuple[SchemeConfig, float]], float_acc: float, target_loss: float
) -> tuple[SchemeConfig, float]:
    """The smallest width whose measured loss is ``<= target_loss`` (8 bits if none)."""
    for b in sorted(sweep):
        cfg, acc = sweep[b]
        if within(float_acc - acc, target_loss):
            return cfg, acc
    return sweep[max(sweep)]


def uniform_config(
    prof: ModelProfile,
    p: int,
    x: torch.Tensor,
    y: torch.Tensor,
    target_loss: float,
    float_acc: float | None = None,
) -> SchemeConfig:
    """Uniform-width baseline tuned on ``(x, y)`` to a measured loss ``<= target_loss``."""
    fa = accuracy(prof.graph_module, x, y) if float_acc is None else float_acc
    return pick_uniform(uniform_sweep(prof, p, x, y), fa, target_loss)[0]


def _sorted_magnitudes(prof: ModelProfile, p: int) -> dict[str, torch.Tensor]:
    mods = dict(prof.graph_module.named_modules())
    return {
        l.name: mods[l.name].weight.detach().abs().flatten().sort().values for l in prof.layers[:p]
    }


def _apply_pruning(
    prof: ModelProfile, p: int, target: nn.Module, sparsity: float, mags: dict[str, torch.Tensor]
) -> int:
    """Writes the pruned weights of layers ``1..p`` into ``target`` (a copy of the profiled
    graph); returns the sparse payload in bytes."""
    src = dict(prof.graph_module.named_modules())
    dst = dict(target.named_modules())
    total = 0
    with torch.no_grad():
        for layer in prof.layers[:p]:
            w = src[layer.name].weight
            k = int(math.floor(sparsity * w.numel()))
            if k > 0:
                thresh = mags[layer.name][k - 1]
                dst[layer.name].weight.copy_(torch.where(w.abs() > thresh, w, torch.zeros_like(w)))
            else:
                dst[layer.name].weight.copy_(w)
            nnz = int((dst[layer.name].weight != 0).sum())
            total += (
                min(
                    FLOAT_BYTES * nnz + math.ceil(layer.weight_count / 8),
                    FLOAT_BYTES * layer.weight_count,
                )
                + FLOAT_BYTES * layer.bias_count
            )
    return total


def pruned_model(prof: ModelProfile, p: int, sparsity: float) -> tuple[nn.Module, int]:
    """A copy of the model whose layers ``1..p`` keep the ``1 - sparsity`` largest-magnitude
    weights each; returns it with the sparse weight payload in bytes (per layer
    ``min(4 nnz + ceil(W/8), 4 W)`` plus the float32 bias)."""
    gm = copy.deepcopy(prof.graph_module)
    size = _apply_pruning(prof, p, gm, sparsity, _sorted_magnitudes(prof, p))
    return gm.eval(), size


def pruning_sweep(
    prof: ModelProfile,
    p: int,
    x: torch.Tensor,
    y: torch.Tensor,
    grid: Sequence[float] = PRUNING_GRID,
) -> list[tuple[float, float, int]]:
    """``[(sparsity, measured accuracy on (x, y), payload bytes)]`` for every sparsity of
    ``grid`` (ascending); one model copy, weights rewritten per sparsity."""
    gm = copy.deepcopy(prof.graph_module).eval()
    mags = _sorted_magnitudes(prof, p)
    out = []
    for s in sorted(set(grid) | {0.0}):
        size = _apply_pruning(prof, p, gm, s, mags)
        out.append((float(s), accuracy(gm, x, y), size))
        if p == 0:
            break
    return out


def pick_pruning(
    prof: ModelProfile,
    p: int,
    sweep: list[tuple[float, float, int]],
    float_acc: float,
    target_loss: float,
    cache: dict | None = None,
) -> SchemeConfig:
    """The largest sparsity of ``sweep`` (scanned upwards, stopping at the first failure)
    whose measured loss is ``<= target_loss``; the activation ships as float32.
    ``cache`` (optional dict) reuses configs across calls by ``(p, sparsity)``."""
    best = 0.0
    for s, acc, _ in sweep:
        if not within(float_acc - acc, target_loss):
            break
        best = s
    if cache is not None and (p, best) in cache:
        return cache[(p, best)]
    gm, size = pruned_model(prof, p, best)
    cfg = _base(
        prof,
        "pruning",
        p,
        size,
        prof.activation_payload_bytes(p, None),
        gm,
        detail={"sparsity": best},
    )
    if cache is not None:
        cache[(p, best)] = cfg
    return cfg


def pruning_config(
    prof: ModelProfile,
    p: int,
    x: torch.Tensor,
    y: torch.Tensor,
    target_loss: float,
    float_acc: float | None = None,
    grid: Sequence[float] = PRUNING_GRID,
) -> SchemeConfig:
    """Magnitude pruning of the device layers tuned on ``(x, y)`` to a measured loss
    ``<= target_loss`` (:func:`pruning_sweep` + :func:`pick_pruning`)."""
    fa = accuracy(prof.graph_module, x, y) if float_acc is None else float_acc
    return pick_pruning(prof, p, pruning_sweep(prof, p, x, y, grid), fa, target_loss)


class _AutoencodedModel(nn.Module):
    def __init__(
        self,
        device: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        server: nn.Module,
        cut_shape: tuple[int, ...],
    ):
        super().__init__()
        self.device, self.encoder, self.decoder, self.server = device, encoder, decoder, server
        self.cut_shape = cut_shape

    def forward(self, x):
        a = self.device(x)
        code = self.encoder(a.reshape(a.shape[0], -1))
        return self.server(self.decoder(code).reshape(a.shape[0], *self.cut_shape))


def train_autoencoder(
    activations: torch.Tensor,
    code: int,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
):
    """Linear encoder ``A -> code`` and decoder ``code -> A`` + ReLU trained with MSE on
    flattened cut activations (scaled by their overall standard deviation)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    a = activations.reshape(activations.shape[0], -1).detach()
    dim = a.shape[1]
    encoder = nn.Linear(dim, code)
    decoder = nn.Sequential(nn.Linear(code, dim), nn.ReLU())
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    scale = float(a.std()) or 1.0
    for _ in range(steps):
        idx = torch.randint(0, a.shape[0], (min(batch_size, a.shape[0]),), generator=gen)
        batch = a[idx]
        loss = ((decoder(encoder(batch)) - batch) ** 2).mean() / scale**2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        mse = float(((decoder(encoder(a)) - a) ** 2).mean() / scale**2)
    return encoder.eval(), decoder.eval(), mse


def autoencoder_config(
    prof: ModelProfile,
    p: int,
    x_train: torch.Tensor,
    ratio: int = 8,
    steps: int = 600,
    seed: int = 0,
) -> SchemeConfig:
    """Autoencoder compression of the cut activation (a code of ``min(A_p, max(16,
    ceil(A_p/ratio)))`` floats) trained on the cut activations of ``x_train``. The encoder
    runs on (and is shipped to) the device, the decoder on the server; at ``p = L`` nothing
    is sent, so it equals ``no_opt``."""
    if p == prof.num_layers:
        cfg = no_opt_config(prof, p)
        cfg.scheme = "autoencoder"
        return cfg
    seg = split_model(prof, p)
    with torch.no_grad():
        acts = seg.device(x_train)
    dim = prof.activation_elems(p)
    code = min(dim, max(16, math.ceil(dim / ratio)))
    enc, dec, mse = train_autoencoder(acts, code, steps=steps, seed=seed)
    module = _AutoencodedModel(seg.device, enc, dec, seg.server, seg.cut_shape).eval()
    enc_bytes = FLOAT_BYTES * (dim * code + code)
    w_bytes = fp32_weight_bytes(prof, p) + enc_bytes
    return SchemeConfig(
        "autoencoder",
        p,
        prof.device_macs(p) + dim * code,
        prof.server_macs(p) + code * dim,
        w_bytes,
        FLOAT_BYTES * code,
        fp32_weight_bytes(prof, p),
        prof.activation_payload_bytes(p, None),
        module=module,
        detail={"code": code, "relative_mse": round(mse, 5)},
        memory_bytes=device_memory(prof, p, w_bytes),
    )


# ----------------------------------------------------------------------------- registry

#: Key of a level-free scheme's configurations (its configuration serves every budget).
LEVEL_FREE = 0.0


class SchemeContext(Protocol):
    """What a scheme builder reads (the :class:`~qpart.simulation.simulator.Simulator`):
    the model's profile, calibration and QPART table, the acceptance inputs ``x_train`` with
    the float model's predictions ``y_tune``, the simulated levels, the Table II cost
    coefficients, the selection rule, the held-out acceptance (``None`` without an
    acceptance split), and caches shared across partition points."""

    prof: ModelProfile
    calib: Calibration
    table: PatternTable
    x_train: torch.Tensor
    y_tune: torch.Tensor
    levels: tuple[float, ...]
    coefficients: np.ndarray
    rule: AcceptanceRule
    acceptance: HeldOutAcceptance | None
    ae_steps: int
    seed: int
    uniform_sweeps: dict[int, dict[int, tuple[SchemeConfig, float]]]
    pruning_sweeps: dict[int, list[tuple[float, float, int]]]
    pruned: dict[Any, SchemeConfig]
    qpart_configs: dict[tuple, SchemeConfig]


#: ``builder(context, p) -> {level: config or None}``: a scheme's configurations at partition
#: point ``p`` per simulated level (:data:`LEVEL_FREE` for level-free schemes); ``None`` marks
#: a level where the scheme has no configuration at ``p``.
SchemeBuilder = Callable[[SchemeContext, int], dict[float, "SchemeConfig | None"]]

_BUILDERS: dict[str, SchemeBuilder] = {}


def register_scheme(name: str) -> Callable[[SchemeBuilder], SchemeBuilder]:
    """Decorator registering ``builder`` as scheme ``name`` (listed in registration order)."""

    def decorate(builder: SchemeBuilder) -> SchemeBuilder:
        if name in _BUILDERS:
            raise ValueError(f"scheme {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorate


def unregister_scheme(name: str) -> None:
    """Removes scheme ``name`` from the registry (``KeyError`` if it is not registered)."""
    del _BUILDERS[name]


def registered_schemes() -> tuple[str, ...]:
    """Every registered scheme name, in registration order (built-ins first)."""
    return tuple(_BUILDERS)


def scheme_builder(name: str) -> SchemeBuilder:
    """The registered builder of scheme ``name``; ``ValueError`` names the known ones."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown scheme {name!r}; known: {tuple(_BUILDERS)}")
    return _BUILDERS[name]


def qpart_pattern_config(ctx: SchemeContext, pl: Plan, level: float) -> SchemeConfig:
    """The QPART configuration of table pattern ``pl`` (built once per distinct pattern),
    with its selection and held-out measurements in ``detail``."""
    key = (pl.partition_point, tuple(pl.bits), pl.activation_bits)
    if key not in ctx.qpart_configs:
        extra = {}
        if pl.selection_loss is not None:
            extra["selection_loss"] = pl.selection_loss
        if pl.accepted:
            extra.update(
                measured_loss=pl.measured_loss,
                acceptance_n=pl.acceptance_n,
                loss_upper_bound=pl.loss_upper_bound,
            )
        ctx.qpart_configs[key] = quantized_config(
            ctx.prof,
            "qpart",
            pl.partition_point,
            pl.bits,
            pl.activation_bits,
            level=level,
            **extra,
        )
    return ctx.qpart_configs[key]


def float_fallback(ctx: SchemeContext, p: int, scheme: str) -> SchemeConfig:
    """What a scheme sends at ``p`` when none of its configurations is accepted for the
    budget: the float32 segment and activation (zero loss), tagged ``fallback``."""
    cfg = no_opt_config(ctx.prof, p)
    cfg.scheme = scheme
    cfg.detail = {"fallback": "float"}
    return cfg


@register_scheme("qpart")
def _qpart(ctx: SchemeContext, p: int) -> dict[float, SchemeConfig | None]:
    """Per level: the cheapest (Table II costs) table pattern at ``p`` that may serve it
    (:meth:`PatternTable.servable`); the float segment if none may."""
    out: dict[float, SchemeConfig | None] = {}
    table = ctx.table
    at_p = np.array([pl.partition_point == p for pl in table.patterns], dtype=bool)
    scores = table.features @ ctx.coefficients if len(table) else np.zeros(0)
    for lv in ctx.levels:
        ok = at_p & table.servable(lv)
        if not ok.any():
            out[lv] = float_fallback(ctx, p, "qpart") if table.accepted else None
            continue
        idx = int(np.argmin(np.where(ok, scores, np.inf)))
        out[lv] = qpart_pattern_config(ctx, table.patterns[idx], lv)
    return out


@register_scheme("closed_form")
def _closed_form(ctx: SchemeContext, p: int) -> dict[float, SchemeConfig | None]:
    out: dict[float, SchemeConfig | None] = {}
    for lv in ctx.levels:
        try:
            out[lv] = closed_form_config(ctx.prof, ctx.calib, p, lv, ctx.coefficients)
        except InfeasibleError:  # as QPART: no pattern at (p, level)
            out[lv] = None
    return out


@register_scheme("uniform")
def _uniform(ctx: SchemeContext, p: int) -> dict[float, SchemeConfig | None]:
    """Per level: the smallest uniform width accepted for it (held-out bound with an
    acceptance split, else the selection rule on ``x_train``); float if none is."""
    if p not in ctx.uniform_sweeps:
        ctx.uniform_sweeps[p] = uniform_sweep(ctx.prof, p, ctx.x_train, ctx.y_tune)
        for b, (cfg, acc) in ctx.uniform_sweeps[p].items():
            cfg.detail["selection_loss"] = 1.0 - acc
            if ctx.acceptance is not None:
                m = ctx.acceptance.measure(p, [b] * p, b if p < ctx.prof.num_layers else None)
                cfg.detail.update(
                    measured_loss=m.measured_loss,
                    acceptance_n=m.n,
                    loss_upper_bound=m.upper_bound,
                )
    sweep = ctx.uniform_sweeps[p]
    if ctx.acceptance is None:
        # y_tune holds the float model's predictions: 1 - accuracy is the flip rate.
        return {lv: pick_uniform(sweep, 1.0, ctx.rule.limit(lv))[0] for lv in ctx.levels}
    out: dict[float, SchemeConfig | None] = {}
    for lv in ctx.levels:
        ok = [b for b in sorted(sweep) if within(sweep[b][0].detail["loss_upper_bound"], lv)]
        out[lv] = sweep[ok[0]][0] if ok else float_fallback(ctx, p, "uniform")
    return out


@register_scheme("pruning")
def _pruning(ctx: SchemeContext, p: int) -> dict[float, SchemeConfig | None]:
    """Per level: the largest sparsity (scanned upwards, stopping at the first failure)
    accepted for it; sparsity 0 is the float segment."""
    if p not in ctx.pruning_sweeps:
        sweep = pruning_sweep(ctx.prof, p, ctx.x_train, ctx.y_tune)
        if ctx.acceptance is not None:
            gm = copy.deepcopy(ctx.prof.graph_module).eval()
            mags = _sorted_magnitudes(ctx.prof, p)
            bounds = []
            for s_, _, _ in sweep:
                _apply_pruning(ctx.prof, p, gm, s_, mags)
                bounds.append(ctx.acceptance.measure_model(gm).upper_bound)
            # the held-out bound stands in for "1 - accuracy" of the selection sweep
            sweep = [(s_, 1.0 - b, size, b) for (s_, _, size), b in zip(sweep, bounds)]
        ctx.pruning_sweeps[p] = sweep
    sweep = ctx.pruning_sweeps[p]
    if ctx.acceptance is None:
        return {
            lv: pick_pruning(ctx.prof, p, sweep, 1.0, ctx.rule.limit(lv), ctx.pruned)
            for lv in ctx.levels
        }
    out: dict[float, SchemeConfig | None] = {}
    for lv in ctx.levels:
        held = [(s_, 1.0 - b, size) if s_ > 0 else (s_, 1.0, size) for s_, _, size, b in sweep]
        out[lv] = pick_pruning(ctx.prof, p, held, 1.0, lv, ctx.pruned)
    return out


@register_scheme("autoencoder")
def _autoencoder(ctx: SchemeContext, p: int) -> dict[float, SchemeConfig | None]:
    return {
        LEVEL_FREE: autoencoder_config(ctx.prof, p, ctx.x_train, steps=ctx.ae_steps, seed=ctx.seed)
    }


@register_scheme("no_opt")
def _no_opt(ctx: SchemeContext, p: int) -> dict[float, SchemeConfig | None]:
    return {LEVEL_FREE: no_opt_config(ctx.prof, p)}


#: The built-in schemes, in the order tables and plots list them (registration order).
SCHEMES = registered_schemes()
