"""Per noise source (each layer's weights, each cut activation) of a calibration: the
noise curve ``p exp(-alpha b)`` fitted to width probes and the robustness ``t`` (DESIGN.md
section 3; the procedure is described in docs/PLANNING.md section 3, steps 2-3).

The robustness search runs on the inputs of lowest top-1 margin and is verified on all of
them (:func:`~qpart.planning.robustness.robustness_on_subset`); the energies are stratified
estimates of the mean over all inputs (:func:`energy_sample`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.metrics import TopK
from ..core.split import roundtrip_activation
from .noise_model import NoiseModel
from .probe import Probe, quantized_weight
from .robustness import first_guess, needed_disagreements, robustness, robustness_on_subset

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


def source_models(probe: Probe, prof, widths, reference_drop, seed, bar, order=None):
    """``(layer models, {cut point: activation model})``: the :class:`NoiseModel` (noise
    curve and robustness) of every layer and every cut activation of ``prof`` on the
    probe's inputs, updating the progress ``bar`` per source. ``order``: the inputs in
    ascending-margin order - the robustness search then runs on a low-margin subset
    (:func:`~qpart.planning.robustness.robustness_on_subset`) and, with the top-1 metric,
    the energies on :func:`energy_sample`'s rows."""
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
