"""Accuracy-sensitivity calibration (DESIGN.md §3, after Zhou et al., AAAI 2018).

For a model and calibration inputs this measures, with the real ``qpart_kernels``
quantizer:

* per learnable layer ``i``: the logit-noise energy ``E||r_i||^2`` when only that layer is
  quantized to ``b`` bits, at a few widths; fitted as ``p_i exp(-alpha_i b)`` by least
  squares in log space, then ``p_i`` raised so the curve upper-bounds every measurement
  (conservative);
* the same for the cut activation at every valid partition point (``p_a``, ``alpha_a``);
* the adversarial margin ``||r*|| = min_{j != k}(z_k - z_j)/sqrt(2)`` per sample;
* the robustness ``t_i``: the logit-noise energy that, injected at source ``i`` (uniform,
  quantization-like noise on the weights / activation, scale found by bisection), flips
  ``reference_drop`` of the calibration predictions (searched on the lowest-margin inputs
  and verified once on all of them, :func:`~qpart.planning.robustness.robustness_on_subset`);
* the energies above are stratified estimates of the mean over all inputs (every
  lowest-margin input and a seeded sample of the others, :func:`energy_sample`);
* the budget ``C(a)``: with ``D = sum_i p_i exp(-alpha_i b_i) / t_i``, the allowed ``D`` for
  an accuracy loss ``a``. Initial value from isotropic Gaussian logit noise (``C(a) =
  E(a)/E(reference_drop)``), then a closed loop: plans at every partition point are
  quantized with the real kernels and ``C(a)`` is shrunk until the measured prediction-flip
  rate (an upper bound of the accuracy loss on the same data) is at most ``safety * a``.

Deterministic for a seed; shows tqdm progress; saved and loaded as JSON.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.metrics import AgreementSpec, TopK
from ..core.profile import ModelProfile
from ..core.profile import profile as profile_model
from ..core.split import roundtrip_activation
from .allocation import InfeasibleError
from .noise_model import DEFAULT_LEVELS, DEFAULT_WIDTHS, Calibration, NoiseModel
from .probe import Probe, quantized_weight
from .robustness import (
    allowed_disagreements,
    first_guess,
    needed_disagreements,
    robustness,
    robustness_on_subset,
)
from .solve import default_bit_costs, solve_partition

#: Bump when the calibration procedure changes: part of :func:`cached_calibration`'s file
#: name, so a cache written by another procedure is not read back.
CALIBRATION_PROCEDURE = 5
#: Cumulative fractions of the inputs (in ascending-margin order) at which a closed-loop
#: plan measurement may stop once it has exceeded its disagreement limit.
CHUNK_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
#: The robustness search runs on the lowest-margin inputs: this fraction of them, and at
#: least :data:`SUBSET_MIN_MULTIPLE` times the disagreements its target needs; all inputs
#: when that is more than half of them.
SUBSET_FRACTION = 0.125
SUBSET_MIN_MULTIPLE = 8


#: The noise energies (width probes and ``t``) are stratified estimates: every input of the
#: low-margin subset, and this fraction of the others (seeded; at least
#: :data:`ENERGY_SAMPLE_MIN` of them, all when fewer), weighted up to all inputs. Every
#: decision (a robustness bracket, a closed-loop plan) is still measured on all inputs.
ENERGY_SAMPLE_FRACTION = 0.3
ENERGY_SAMPLE_MIN = 64


@dataclass(frozen=True)
class EnergySample:
    """The rows the noise energies are measured on: ``rows`` (the low-margin subset, then
    the sampled other inputs), ``weights`` per row (1, and ``len(rest) / sampled``) so that
    ``sum(weights * per-row energy) / n`` estimates the mean over all ``n`` inputs without
    bias, and ``rest_positions``: the sampled rows' positions among the other inputs."""

    rows: torch.Tensor
    weights: torch.Tensor
    rest_positions: torch.Tensor

    @property
    def rest_weight(self) -> float:
        """The weight of a sampled row of the other inputs."""
        return float(self.weights[-1]) if self.rest_positions.numel() else 1.0


def energy_sample(order: torch.Tensor, size: int, seed: int) -> EnergySample:
    """The stratified energy rows for inputs ranked ``order`` (ascending margin) with a
    low-margin subset of ``size`` rows (:data:`ENERGY_SAMPLE_FRACTION`)."""
    low, rest = order[:size], order[size:]
    k = min(rest.numel(), max(ENERGY_SAMPLE_MIN, math.ceil(ENERGY_SAMPLE_FRACTION * rest.numel())))
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randperm(rest.numel(), generator=gen)[:k].sort().values
    weights = torch.cat(
        [torch.ones(low.numel()), torch.full((k,), rest.numel() / max(k, 1))]
    ).double()
    return EnergySample(torch.cat([low, rest[positions]]), weights, positions)


def subset_size(target: float, n: int) -> int | None:
    """Rows of the robustness search's low-margin subset for a disagreement-rate ``target``
    on ``n`` inputs (``None``: search on all of them)."""
    least = SUBSET_MIN_MULTIPLE * needed_disagreements(target, n)
    size = max(math.ceil(SUBSET_FRACTION * n), least)
    return size if 2 * size <= n else None


def adversarial_margins(logits: torch.Tensor) -> torch.Tensor:
    """``||r*|| = min_{j != k} (z_k - z_j) / sqrt(2)`` per sample (``k`` the predicted class;
    outputs flattened per sample; zero for one-element outputs)."""
    flat = logits.reshape(logits.shape[0], -1)
    if flat.shape[1] < 2:
        return torch.zeros(flat.shape[0])
    top2 = flat.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)


def _fit(widths: Sequence[int], energies: Sequence[float]) -> tuple[float, float]:
    b = np.asarray(widths, float)
    e = np.maximum(np.asarray(energies, float), 1e-30)
    slope, _ = np.polyfit(b, np.log(e), 1)
    alpha = float(np.clip(-slope, 0.2, 3.0))
    p = float(np.max(e * np.exp(alpha * b)))  # upper envelope: conservative
    return p, alpha


def _weight_noise(w: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform weight noise at scale 1, ``range * (U - 1/2)`` with the range per row (the
    shape of quantization noise); seeded, so every scale uses the same pattern."""
    w2 = w.detach().reshape(w.shape[0], -1).float()
    span = w2.max(1, keepdim=True).values - w2.min(1, keepdim=True).values
    return span * (torch.rand(w2.shape, generator=torch.Generator().manual_seed(seed)) - 0.5)


def _activation_noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform activation noise at scale 1, ``range * (U - 1/2)`` with the range per sample
    (shape of ``x``); seeded."""
    flat = x.reshape(x.shape[0], -1)
    span = flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values
    noise = torch.rand(flat.shape, generator=torch.Generator().manual_seed(seed)) - 0.5
    return (span * noise).reshape(x.shape)


class _Perturbed:
    """The value of a source's node at noise scale ``s`` on the rows of a probe chunk:
    ``y0 + s * delta`` (``delta`` the node's change at scale 1) when the node is linear in
    the noise, else ``fn(s)`` on all rows, then the chunk's rows."""

    def __init__(self, probe: Probe, y0=None, delta=None, fn=None):
        self.probe, self.y0, self.delta, self.fn = probe, y0, delta, fn
        self._rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, s: float, chunk: int = 0) -> torch.Tensor:
        rows = self.probe.rows(chunk)
        if self.fn is not None:
            value = self.fn(s)
            return value if rows is None else value.index_select(0, rows)
        y0, delta = self._parts(chunk)
        return torch.add(y0, delta, alpha=s)

    def _parts(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.probe.rows(chunk)
        if rows is None:
            return self.y0, self.delta
        if chunk not in self._rows:
            self._rows[chunk] = (self.y0.index_select(0, rows), self.delta.index_select(0, rows))
        return self._rows[chunk]

    def stacked(self, scales, chunk: int = 0) -> torch.Tensor:
        """The values at every scale, stacked along the batch (written in place, no
        concatenation when linear)."""
        if self.fn is not None or len(scales) == 1:
            values = [self(s, chunk) for s in scales]
            return values[0] if len(values) == 1 else torch.cat(values)
        y0, delta = self._parts(chunk)
        fmt = torch.channels_last if y0.dim() == 4 else torch.contiguous_format
        out = torch.empty((len(scales) * y0.shape[0], *y0.shape[1:]), memory_format=fmt)
        for block, s in zip(out.split(y0.shape[0]), scales):
            torch.add(y0, delta, alpha=s, out=block)
        return out


def _stacked_measure(probe: Probe, node_index: int, value_at):
    """``measure(scales)`` for :func:`~qpart.planning.robustness.robustness`: the node's
    value replaced by ``value_at(scale)`` for every scale, in one stacked pass."""

    def measure(scales):
        with torch.inference_mode():
            out = probe.outputs_from(node_index, value_at.stacked(scales))
        blocks = out.reshape(len(scales), probe.n, *out.shape[1:])
        return [(e, r, blk) for (e, r), blk in zip(probe.stats_many(out, len(scales)), blocks)]

    return measure


def _part_measure(probe: Probe, node_index: int, value_at, parts: dict[str, int]):
    """``measure(scales, part)`` for :func:`~qpart.planning.robustness.robustness_on_subset`
    on the rows of probe chunk ``parts[part]``: energy sums and disagreement counts."""

    def measure(scales, part):
        chunk = parts[part]
        with torch.inference_mode():
            out = probe.outputs_from(node_index, value_at.stacked(scales, chunk), chunk=chunk)
        rows = probe.rows(chunk)
        blocks = out.reshape(len(scales), rows.numel(), *out.shape[1:])
        sums = probe.sums_many(out, len(scales), chunk)
        return [(e, c, blk) for (e, c), blk in zip(sums, blocks)]

    return measure


def _width_probe(probe: Probe, idx: int, outs, widths, reference, target, sample=None):
    """Energies of the source quantized at each width (node ``idx`` replaced by ``outs``,
    one stacked pass) and the robustness search's first scale predicted from them; on the
    rows of ``sample`` (:class:`EnergySample`, its weighted estimate) when given, else on
    all inputs."""
    scales = [1.0 / (2.0 ** int(b) - 1.0) for b in widths]
    if sample is None:
        out = probe.outputs_from(idx, outs)
        stats = probe.stats_many(out, len(outs))
        energies = {int(b): e for b, (e, _) in zip(widths, stats)}
        blocks = list(out.reshape(len(outs), probe.n, *out.shape[1:]))
        rates = [r for _, r in stats]
        return energies, first_guess(reference, blocks, scales, rates, target)
    chunk = probe.add_rows(sample.rows, cache=False)
    try:
        with torch.inference_mode():
            out = probe.outputs_from(idx, [o.index_select(0, sample.rows) for o in outs], chunk)
    finally:
        probe.drop_rows([chunk])
    rows = sample.rows.numel()
    ref = reference.index_select(0, sample.rows)
    energies, rates, blocks = {}, [], []
    for b, block in zip(widths, out.reshape(len(outs), rows, *out.shape[1:])):
        per_row = ((block - ref).reshape(rows, -1).double() ** 2).sum(-1)
        flips = (block.reshape(rows, -1).argmax(-1) != ref.reshape(rows, -1).argmax(-1)).double()
        energies[int(b)] = float((per_row * sample.weights).sum()) / probe.n
        rates.append(float((flips * sample.weights).sum()) / probe.n)
        blocks.append(block)
    low = rows - sample.rest_positions.numel()  # the guess: from the low-margin rows
    start = first_guess(ref[:low], [blk[:low] for blk in blocks], scales, rates, target, n=probe.n)
    return energies, start


def _t_search(probe, idx, value_at, target, reference, start, subsets, kind):
    """``t`` of one source: with the top-1 rule on the lowest-margin inputs, verified once
    on the rest (:func:`~qpart.planning.robustness.robustness_on_subset`), else on all.
    ``subsets``: ``{"order": inputs in ascending-margin order, "size": subset rows, kind:
    False once a search of that kind of source (``"layer"``, ``"activation"``) failed its
    verification - the later ones then search on all inputs}``."""
    full = _stacked_measure(probe, idx, value_at)
    if reference is None or subsets is None or not subsets.get(kind, True):
        return robustness(full, target, probe.n, reference=reference, start=start)
    ranked, size = subsets["order"], subsets["size"]
    parts = {
        "subset": probe.add_rows(ranked[:size], cache=False),
        "rest": probe.add_rows(ranked[size:], cache=False),
    }
    sample = subsets.get("sample")
    try:
        t, verified = robustness_on_subset(
            _part_measure(probe, idx, value_at, parts),
            full,
            target,
            probe.n,
            probe.rows(parts["subset"]),
            probe.rows(parts["rest"]),
            reference=reference,
            start=start,
            rest_sample=None if sample is None else (sample.rest_positions, sample.rest_weight),
        )
    finally:
        probe.drop_rows(parts.values())
    if not verified:
        subsets[kind] = False
    return t


def _source_models(probe: Probe, prof, widths, reference_drop, seed, bar, order=None):
    """Noise curves and robustness of every layer and every cut activation; ``order``:
    the inputs in ascending-margin order (the robustness search then runs on a low-margin
    subset, :func:`~qpart.planning.robustness.robustness_on_subset`)."""
    top1 = isinstance(probe.agreement, TopK) and probe.agreement.k == 1
    reference = probe.ref if top1 else None
    size = subset_size(reference_drop, probe.n)
    subsets = None if order is None or size is None else {"order": order, "size": size}
    sample = None
    if subsets is not None and reference is not None:
        sample = energy_sample(order, size, seed * 1000 + 999)
        if sample.rows.numel() < probe.n:
            subsets["sample"] = sample
        else:
            sample = None
    layer_models: list[NoiseModel] = []
    for i, layer in enumerate(prof.layers):
        bar.set_description(f"calibrating: layer {i + 1}/{prof.num_layers} {layer.name}")
        idx = probe.layer_index[layer.name]
        w = probe.modules[layer.name].weight
        x_q = probe.quantized_layer_input(layer.name)  # int8 with act_int8, else float
        outs = [probe.layer_output(layer.name, quantized_weight(w, b), x=x_q) for b in widths]
        energies, start = _width_probe(probe, idx, outs, widths, reference, reference_drop, sample)
        p, alpha = _fit(list(energies), list(energies.values()))
        noise = _weight_noise(w, seed * 1000 + i)
        try:  # linear in the weight: y(s) = y_float + s * layer(x, noise) without bias
            delta = probe.layer_output(layer.name, noise, bias=False)
            value_at = _Perturbed(probe, probe.cache[probe.nodes[idx]], delta)
        except TypeError:
            w2 = w.detach().reshape(w.shape[0], -1).float()

            def weight_at(s, name=layer.name, w2=w2, noise=noise):
                return probe.layer_output(name, w2 + s * noise)

            value_at = _Perturbed(probe, fn=weight_at)

        t = _t_search(probe, idx, value_at, reference_drop, reference, start, subsets, "layer")
        layer_models.append(NoiseModel(p, alpha, max(t, 1e-30), energies))
        bar.update()

    act_models: dict[int, NoiseModel] = {}
    for p_cut in sorted(prof.cuts):
        bar.set_description(f"calibrating: activation at cut {p_cut}")
        idx = probe.index[prof.cuts[p_cut].node]
        value = probe.cache[probe.nodes[idx]]
        with torch.inference_mode():
            outs = [roundtrip_activation(value, b) for b in widths]
        noise = _activation_noise(value, seed * 1000 + 500 + p_cut)
        layer = probe.sole_layer_user(idx)
        if layer is not None:  # the next layer is linear in the cut value: start there
            idx = probe.layer_index[layer]
            outs = [probe.layer_output(layer, x=o) for o in outs]
            delta = probe.layer_output(layer, bias=False, x=noise)
            act_at = _Perturbed(probe, probe.cache[probe.nodes[idx]], delta)
        else:
            act_at = _Perturbed(probe, value, noise)

        energies, start = _width_probe(probe, idx, outs, widths, reference, reference_drop, sample)
        p, alpha = _fit(list(energies), list(energies.values()))
        t = _t_search(probe, idx, act_at, reference_drop, reference, start, subsets, "activation")
        act_models[p_cut] = NoiseModel(p, alpha, max(t, 1e-30), energies)
        bar.update()
    return layer_models, act_models


def first_failing_plan(probe: Probe, plans: Iterable[tuple], limit: int, weight, measured: dict):
    """The first of ``plans`` (``(p, bits, b_a)`` keys; an iterable, read once and only as
    far as needed) that disagrees with the float model on more than ``limit`` of the
    probe's inputs, or ``None`` when none does.

    Breadth first: one chunk of inputs (:meth:`Probe.set_chunks`, ascending margin) of every
    open plan at a time, so that a plan failing on the low-margin inputs ends the check
    before the others are measured on all inputs. ``None`` only once every plan was
    measured on all inputs, so the answer is exact and the same in any order.
    ``measured``: ``{plan: (disagreements, rows measured)}``, read and updated (a plan over
    the limit stays a lower bound; one measured in part resumes where it stopped)."""
    known: list[tuple] = []

    def first_round():
        for plan in plans:
            known.append(plan)
            yield plan

    this_round = first_round()
    while True:
        still_open = False
        for plan in this_round:
            count, seen = measured.get(plan, (0, 0))
            if seen < probe.n and count <= limit:
                p, bits, b_a = plan
                count, seen = probe.plan_disagreements(
                    p, bits, b_a, weight, limit, resume=(count, seen), max_chunks=1
                )
                measured[plan] = (count, seen)
                still_open = still_open or seen < probe.n
            if count > limit:
                return plan
        if not still_open:
            return None
        this_round = known


def free_threads(limit: int | None = None) -> int:
    """Cores not busy with other work: ``os.cpu_count()`` (at most ``limit``) less the
    rounded one-minute load average, at least 1. Torch's threads wait for each other at
    every operation, so on a loaded machine all cores are slower than the free ones (two
    threads on two cores shared with two busy jobs: about 5x slower than one)."""
    cores = os.cpu_count() or 1
    if limit is not None:
        cores = min(cores, limit)
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform
        busy = 0
    return max(1, min(cores, (os.cpu_count() or 1) - busy))


@contextlib.contextmanager
def _long_lived_objects_frozen():
    """Keeps the objects that exist on entry (torch's modules, the caller's data) out of the
    garbage collector's full collections until exit (``gc.freeze``): one full collection
    of an interpreter with torch imported walks ~400k objects (~0.15 s, a fifth of a small
    CNN's calibration), and calibration allocates enough to trigger them. Does nothing
    when the caller froze objects itself (a forking server, say)."""
    if gc.get_freeze_count() > 0:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def calibrate(
    model: nn.Module,
    x: torch.Tensor,
    *,
    prof: ModelProfile | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    reference_drop: float = 0.01,
    safety: float = 0.5,
    max_shrink_steps: int = 12,
    shrink: float = 0.7,
    seed: int = 0,
    progress: bool = True,
    threads: int | str | None = None,
    agreement: AgreementSpec = None,
    act_int8: bool = False,
) -> Calibration:
    """Calibrates the accuracy model of ``model`` on inputs ``x`` (no labels needed: the
    float model's own predictions are the reference, so the flip rate bounds the loss).

    ``levels``: accuracy losses (fractions) to calibrate ``C(a)`` for; ``widths``: bit widths
    at which the noise curves are measured; ``reference_drop``: flip rate defining the
    robustness ``t``; ``safety``: the closed loop keeps the measured flip rate of the planned
    configurations at or below ``safety * a``; ``threads``: torch intra-op threads
    while calibrating (restored afterwards): ``None`` (default) torch's setting - all cores
    unless the caller set fewer -, ``"auto"`` the cores other processes leave free
    (:func:`free_threads`, for shared machines), or a count;
    ``agreement``: what counts as the same answer as the float model
    (:func:`qpart.core.metrics.agreement`; top-1 by default) - every "flip rate" here is
    that metric's disagreement rate; ``act_int8``: the device layers run on int8
    activations, so the width probes and the closed loop measure with that numerics
    (:class:`~qpart.planning.probe.Probe`). See the module docstring.
    """
    old_threads = torch.get_num_threads()
    if threads == "auto":
        threads = free_threads(old_threads)
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with _long_lived_objects_frozen():
            return _calibrate(
                model,
                x,
                prof,
                levels,
                widths,
                reference_drop,
                safety,
                max_shrink_steps,
                shrink,
                seed,
                progress,
                agreement,
                act_int8,
            )
    finally:
        torch.set_num_threads(old_threads)


def _calibrate(
    model,
    x,
    prof,
    levels,
    widths,
    reference_drop,
    safety,
    max_shrink_steps,
    shrink,
    seed,
    progress,
    agreement_spec=None,
    act_int8=False,
) -> Calibration:
    from tqdm.auto import tqdm

    if not levels or any(not 0 < lv < 1 for lv in levels):
        raise ValueError(f"levels must be fractions in (0, 1), got {levels}")
    if len(widths) < 2:
        raise ValueError("need at least two widths to fit the noise curve")
    model = model.eval()
    if prof is None:
        prof = profile_model(model, x[:2])
    torch.manual_seed(seed)
    probe = Probe(prof, x, agreement_spec, act_int8=act_int8)
    margins = adversarial_margins(probe.ref)
    gen = torch.Generator()
    n_sources = prof.num_layers + len(prof.cuts)
    bar = tqdm(total=n_sources + len(levels), desc="calibrating", disable=not progress, leave=False)
    order = torch.argsort(margins, stable=True)
    layer_models, act_models = _source_models(probe, prof, widths, reference_drop, seed, bar, order)

    # Initial C(a): isotropic Gaussian noise on the logits.
    noise_dir = torch.randn(probe.ref.shape, generator=gen.manual_seed(seed + 7))

    def logit_flips(energy: float) -> float:
        noisy = probe.ref + noise_dir * math.sqrt(energy / probe.ref.shape[1])
        return probe.agreement.disagreement_rate(noisy, probe.ref)

    def energy_for(drop: float) -> float:
        lo, hi = -30.0, 30.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if logit_flips(math.exp(mid)) >= drop:
                hi = mid
            else:
                lo = mid
        return math.exp(lo)

    e_ref = energy_for(reference_drop)
    calib = Calibration(
        [l.name for l in prof.layers],
        layer_models,
        act_models,
        {},
        reference_drop,
        float(margins.mean()),
        float(margins.median()),
        seed,
        tuple(int(b) for b in widths),
        safety,
        bool(act_int8),
    )
    costs = default_bit_costs(prof)
    points = [p for p in prof.valid_points if p != 0 or 0 in prof.cuts]
    # (disagreements, rows measured) per configuration, across steps and levels: exact when
    # all rows were measured, else a lower bound that exceeded the limit it was measured for.
    measured: dict[tuple, tuple[int, int]] = {}
    weights: dict[tuple[str, int], torch.Tensor] = {}
    probe.set_chunks(order, CHUNK_FRACTIONS)

    def weight(name: str, b: int) -> torch.Tensor:
        if (name, b) not in weights:
            weights[(name, b)] = quantized_weight(probe.modules[name].weight, b)
        return weights[(name, b)]

    def passes(c_value: float, limit: int) -> bool:
        """Whether every point's plan at ``C = c_value`` disagrees on at most ``limit``
        inputs (:func:`first_failing_plan`); the first failing point is tried first next
        time."""

        def plans():  # solved as they are needed: a first plan that fails ends the step
            for p_cut in list(points):
                try:
                    bits, b_a, _ = solve_partition(prof, calib, p_cut, c_value, costs)
                except InfeasibleError:
                    continue
                yield (p_cut, tuple(bits), b_a)

        failing = first_failing_plan(probe, plans(), limit, weight, measured)
        bar.set_postfix_str(f"{len(measured)} plans measured")
        if failing is None:
            return True
        points.remove(failing[0])
        points.insert(0, failing[0])
        return False

    for level in sorted(levels):
        bar.set_description(f"calibrating: closed loop C({level:g})")
        c_value = energy_for(level) / e_ref
        limit = allowed_disagreements(safety * level, probe.n)
        for _ in range(max_shrink_steps):
            if passes(c_value, limit):
                break
            c_value *= shrink
        calib.budgets[float(level)] = c_value
        bar.update()
    bar.close()
    return calib


def _weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def cached_calibration(
    model: nn.Module,
    x: torch.Tensor,
    prof: ModelProfile,
    cache_dir: str | os.PathLike[str],
    name: str,
    seed: int = 0,
    progress: bool = False,
    act_int8: bool = False,
) -> tuple[Calibration, Path, bool]:
    """Calibration of ``model`` on ``x``, cached as JSON under ``cache_dir`` (file name
    includes a digest of the weights, the sample count and ``_int8`` for the
    integer-activation numerics). Returns ``(calib, path, hit)``."""
    numerics = "_int8" if act_int8 else ""
    path = Path(cache_dir).expanduser() / (
        f"{name}_calib{CALIBRATION_PROCEDURE}{numerics}_n{x.shape[0]}_seed{seed}_"
        f"{_weights_digest(model)}.json"
    )
    if path.is_file():
        return Calibration.load(path), path, True
    calib = calibrate(model, x, prof=prof, seed=seed, progress=progress, act_int8=act_int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    calib.save(tmp)
    os.replace(tmp, path)
    return calib, path, False
