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
  ``reference_drop`` of the calibration predictions;
* the budget ``C(a)``: with ``D = sum_i p_i exp(-alpha_i b_i) / t_i``, the allowed ``D`` for
  an accuracy loss ``a``. Initial value from isotropic Gaussian logit noise (``C(a) =
  E(a)/E(reference_drop)``), then a closed loop: plans at every partition point are
  quantized with the real kernels and ``C(a)`` is shrunk until the measured prediction-flip
  rate (an upper bound of the accuracy loss on the same data) is at most ``safety * a``.

Deterministic for a seed; shows tqdm progress; saved and loaded as JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import fx, nn

import qpart_kernels

from .profile import ModelProfile, instrument_cut
from .profile import profile as profile_model
from .splitting import fake_quantize_activation

#: Default accuracy levels of the offline table (fractions: 0.1 % .. 2 %).
DEFAULT_LEVELS = (0.001, 0.0025, 0.005, 0.01, 0.02)
DEFAULT_WIDTHS = (2, 4, 6)
CALIBRATION_FORMAT = "qpart-calibration"
CALIBRATION_VERSION = 1


@dataclass(frozen=True)
class NoiseModel:
    """``E||r||^2 ~ p exp(-alpha b)``; ``t`` the robustness (energy for the reference drop)."""

    p: float
    alpha: float
    t: float
    measured: dict[int, float] = field(default_factory=dict)

    @property
    def g(self) -> float:
        """``p / t``: the normalised noise at 0 bits."""
        return self.p / self.t

    def energy(self, bits: float) -> float:
        """Predicted logit-noise energy at ``bits``."""
        return self.p * math.exp(-self.alpha * bits)


@dataclass
class Calibration:
    """Sensitivity of one model: per layer and per cut activation, and ``C(a)``."""

    layer_names: list[str]
    layers: list[NoiseModel]
    activations: dict[int, NoiseModel]
    budgets: dict[float, float]
    reference_drop: float
    margin_mean: float
    margin_median: float
    seed: int
    widths: tuple[int, ...]
    safety: float

    def budget(self, accuracy_loss: float) -> float:
        """``C(a)``: the calibrated budget of the largest level ``<= a`` (conservative step).
        Raises :class:`~qpart.allocation.InfeasibleError` (``"accuracy"``, a ``ValueError``)
        for ``a`` below the smallest calibrated level."""
        levels = sorted(self.budgets)
        below = [lv for lv in levels if lv <= accuracy_loss * (1 + 1e-9)]
        if not below:
            from .allocation import InfeasibleError

            raise InfeasibleError("accuracy",
                f"accuracy budget {accuracy_loss:.4%} is below the smallest calibrated level "
                f"{levels[0]:.4%}; recalibrate with a smaller level")
        return self.budgets[below[-1]]

    def predicted_loss(self, normalised_noise: float) -> float:
        """Predicted accuracy loss for ``D = sum p e^(-alpha b)/t``: log-log interpolation of
        the calibrated ``C(a)`` curve (clamped to its ends)."""
        levels = np.array(sorted(self.budgets))
        cs = np.array([self.budgets[lv] for lv in levels])
        if normalised_noise <= 0:
            return 0.0
        order = np.argsort(cs)
        return float(np.exp(np.interp(np.log(normalised_noise), np.log(cs[order]),
                                      np.log(levels[order]), left=-np.inf)))

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION,
            "layer_names": self.layer_names,
            "layers": [_nm_dict(m) for m in self.layers],
            "activations": {str(k): _nm_dict(m) for k, m in self.activations.items()},
            "budgets": [[lv, c] for lv, c in sorted(self.budgets.items())],
            "reference_drop": self.reference_drop, "margin_mean": self.margin_mean,
            "margin_median": self.margin_median, "seed": self.seed,
            "widths": list(self.widths), "safety": self.safety,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        """Inverse of :meth:`to_dict`."""
        if d.get("format") != CALIBRATION_FORMAT or d.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"not a {CALIBRATION_FORMAT} v{CALIBRATION_VERSION} document")
        return cls(
            layer_names=list(d["layer_names"]),
            layers=[_nm_from(m) for m in d["layers"]],
            activations={int(k): _nm_from(m) for k, m in d["activations"].items()},
            budgets={float(lv): float(c) for lv, c in d["budgets"]},
            reference_drop=float(d["reference_drop"]), margin_mean=float(d["margin_mean"]),
            margin_median=float(d["margin_median"]), seed=int(d["seed"]),
            widths=tuple(d["widths"]), safety=float(d["safety"]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the calibration as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Calibration":
        """Reads a calibration written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _nm_dict(m: NoiseModel) -> dict:
    d = asdict(m)
    d["measured"] = {str(k): v for k, v in m.measured.items()}
    return d


def _nm_from(d: dict) -> NoiseModel:
    return NoiseModel(float(d["p"]), float(d["alpha"]), float(d["t"]),
                      {int(k): float(v) for k, v in d.get("measured", {}).items()})


def adversarial_margins(logits: torch.Tensor) -> torch.Tensor:
    """``||r*|| = min_{j != k} (z_k - z_j) / sqrt(2)`` per sample (``k`` the predicted class)."""
    top2 = logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)


def _fit(widths: Sequence[int], energies: Sequence[float]) -> tuple[float, float]:
    b = np.asarray(widths, float)
    e = np.maximum(np.asarray(energies, float), 1e-30)
    slope, _ = np.polyfit(b, np.log(e), 1)
    alpha = float(np.clip(-slope, 0.2, 3.0))
    p = float(np.max(e * np.exp(alpha * b)))  # upper envelope: conservative
    return p, alpha


class _Probe:
    """Runs the float graph on the calibration inputs with some weights replaced and/or the
    cut activation transformed. Float values of every node are cached once, so a
    perturbation at node ``k`` only re-runs the graph from ``k`` on."""

    def __init__(self, prof: ModelProfile, x: torch.Tensor):
        self.prof = prof
        self.gm = prof.graph_module
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.modules = dict(self.gm.named_modules())
        self.layer_index = {}
        for n in self.nodes:
            if n.op == "call_module" and n.target in {l.name for l in prof.layers}:
                self.layer_index[n.target] = self.index[n.name]
        interp = fx.Interpreter(self.gm, garbage_collect_values=False)
        with torch.inference_mode():
            self.ref = interp.run(x)
            self.cache = dict(interp.env)
        self.x = x
        self.pred = self.ref.argmax(-1)

    def run(self, start: int, weights: dict[str, torch.Tensor] | None = None,
            cut: tuple[int, object, tuple] | None = None) -> torch.Tensor:
        """Re-runs nodes from index ``start`` with ``weights`` swapped in and, if ``cut =
        (p, fn, args)``, the cut node's value replaced by ``fn(value, *args)``."""
        init = {n: self.cache[n] for n in self.nodes[:start]}
        if cut is not None:
            p, fn, args = cut
            node = self.nodes[self.index[self.prof.cuts[p].node]]
            if self.index[node.name] < start:
                raise ValueError("cut before start")
            # Run up to the cut, transform, then continue.
            if self.index[node.name] > start:
                init = self._run_partial(init, self.index[node.name] + 1, weights)
            else:
                init[node] = self.cache[node]
            with torch.inference_mode():
                init[node] = fn(init[node], *args)
        return self._swap_run(init, weights)

    def _run_partial(self, init, stop, weights):
        env = dict(init)
        with torch.inference_mode(), _swapped(self.modules, weights):
            interp = fx.Interpreter(self.gm)
            interp.env = env
            for node in self.nodes[:stop]:
                if node in env:
                    continue
                env[node] = interp.run_node(node)
        return env

    def _swap_run(self, init, weights):
        with torch.inference_mode(), _swapped(self.modules, weights):
            return fx.Interpreter(self.gm).run(self.x, initial_env=init)

    def stats(self, logits: torch.Tensor) -> tuple[float, float]:
        energy = float(((logits - self.ref) ** 2).sum(-1).mean())
        flips = float((logits.argmax(-1) != self.pred).float().mean())
        return energy, flips

    def with_weight(self, name: str, new_weight: torch.Tensor) -> tuple[float, float]:
        return self.stats(self.run(self.layer_index[name], {name: new_weight}))

    def with_activation(self, p: int, fn, *args) -> tuple[float, float]:
        start = self.index[self.prof.cuts[p].node]
        return self.stats(self.run(start, None, (p, fn, args)))

    def with_plan(self, p: int, bits, b_a) -> tuple[float, float]:
        """Flip rate of a plan: device layers at ``bits`` (real quantizer, dequantized) and
        the cut activation at ``b_a``."""
        weights = {l.name: _quantized_weight(self.modules[l.name].weight, b)
                   for l, b in zip(self.prof.layers[:p], bits)}
        cut = None if b_a is None else (p, fake_quantize_activation, (b_a,))
        starts = [self.layer_index[n] for n in weights]
        if cut is not None:
            starts.append(self.index[self.prof.cuts[p].node])
        return self.stats(self.run(min(starts), weights, cut))


class _swapped:
    def __init__(self, modules, weights):
        self.modules, self.weights, self.old = modules, weights or {}, {}

    def __enter__(self):
        for name, w in self.weights.items():
            mod = self.modules[name]
            self.old[name] = mod.weight.data
            mod.weight.data = w.reshape(mod.weight.shape).to(mod.weight.dtype)

    def __exit__(self, *exc):
        for name, old in self.old.items():
            self.modules[name].weight.data = old
        return False


def _quantized_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    w2 = w.detach().reshape(w.shape[0], -1).float().contiguous()
    q = qpart_kernels.quantize_weight(w2, bits)
    return qpart_kernels.dequantize_weight(q.packed, q.scales, q.zeros, bits, w2.shape[1])


def _uniform_weight_noise(w: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    w2 = w.detach().reshape(w.shape[0], -1).float()
    step = (w2.max(1, keepdim=True).values - w2.min(1, keepdim=True).values) * scale
    return w2 + step * (torch.rand(w2.shape, generator=gen) - 0.5)


def _uniform_activation_noise(x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    flat = x.reshape(x.shape[0], -1)
    step = (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values) * scale
    return (flat + step * (torch.rand(flat.shape, generator=gen) - 0.5)).reshape(x.shape)


def _bisect_scale(measure, target_flips: float, iters: int = 11) -> float:
    """Smallest noise scale (log bisection) whose flip rate reaches ``target_flips``;
    returns the logit-noise energy measured there."""
    lo, hi = -14.0, 3.0  # log2 of the step relative to the range
    e_hi, f_hi = measure(2.0 ** hi)
    if f_hi < target_flips:
        return e_hi
    e_at = e_hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        e, f = measure(2.0 ** mid)
        if f >= target_flips:
            hi, e_at = mid, e
        else:
            lo = mid
    return e_at


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
    threads: int | None = 1,
) -> Calibration:
    """Calibrates the accuracy model of ``model`` on inputs ``x`` (no labels needed: the
    float model's own predictions are the reference, so the flip rate bounds the loss).

    ``levels``: accuracy losses (fractions) to calibrate ``C(a)`` for; ``widths``: bit widths
    at which the noise curves are measured; ``reference_drop``: flip rate defining the
    robustness ``t``; ``safety``: the closed loop keeps the measured flip rate of the planned
    configurations at or below ``safety * a``; ``threads``: torch intra-op threads while
    calibrating (1 is fastest for these small, many passes on a loaded machine; restored
    afterwards; ``None`` keeps the current setting). See the module docstring.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _calibrate(model, x, prof, levels, widths, reference_drop, safety,
                          max_shrink_steps, shrink, seed, progress)
    finally:
        torch.set_num_threads(old_threads)


def _calibrate(model, x, prof, levels, widths, reference_drop, safety, max_shrink_steps,
               shrink, seed, progress) -> Calibration:
    from tqdm.auto import tqdm

    from .allocation import InfeasibleError
    from .planner import default_bit_costs, solve_partition

    if not levels or any(not 0 < lv < 1 for lv in levels):
        raise ValueError(f"levels must be fractions in (0, 1), got {levels}")
    if len(widths) < 2:
        raise ValueError("need at least two widths to fit the noise curve")
    model = model.eval()
    if prof is None:
        prof = profile_model(model, x[:2])
    torch.manual_seed(seed)
    probe = _Probe(prof, x)
    margins = adversarial_margins(probe.ref)
    gen = torch.Generator()
    n_sources = prof.num_layers + len(prof.cuts)
    bar = tqdm(total=n_sources + len(levels), desc="calibrating", disable=not progress,
               leave=False)

    layer_models: list[NoiseModel] = []
    for i, layer in enumerate(prof.layers):
        w = probe.modules[layer.name].weight
        energies = {b: probe.with_weight(layer.name, _quantized_weight(w, b))[0] for b in widths}
        p, alpha = _fit(list(energies), list(energies.values()))

        def measure(scale, w=w, name=layer.name, i=i):
            gen.manual_seed(seed * 1000 + i)
            return probe.with_weight(name, _uniform_weight_noise(w, scale, gen))

        t = _bisect_scale(measure, reference_drop)
        layer_models.append(NoiseModel(p, alpha, max(t, 1e-30), energies))
        bar.update()

    act_models: dict[int, NoiseModel] = {}
    for p_cut in sorted(prof.cuts):
        energies = {b: probe.with_activation(p_cut, fake_quantize_activation, b)[0]
                    for b in widths}
        p, alpha = _fit(list(energies), list(energies.values()))
        t = _bisect_scale(
            lambda s, p_cut=p_cut: probe.with_activation(
                p_cut, _uniform_activation_noise, s, seed * 1000 + 500 + p_cut),
            reference_drop)
        act_models[p_cut] = NoiseModel(p, alpha, max(t, 1e-30), energies)
        bar.update()

    # Initial C(a): isotropic Gaussian noise on the logits.
    noise_dir = torch.randn(probe.ref.shape, generator=gen.manual_seed(seed + 7))

    def logit_flips(energy: float) -> float:
        noisy = probe.ref + noise_dir * math.sqrt(energy / probe.ref.shape[1])
        return float((noisy.argmax(-1) != probe.pred).float().mean())

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
    calib = Calibration([l.name for l in prof.layers], layer_models, act_models, {},
                        reference_drop, float(margins.mean()), float(margins.median()), seed,
                        tuple(int(b) for b in widths), safety)
    costs = default_bit_costs(prof)
    for level in sorted(levels):
        c_value = energy_for(level) / e_ref
        for _ in range(max_shrink_steps):
            worst = 0.0
            for p_cut in prof.valid_points:
                if p_cut == 0 and 0 not in prof.cuts:
                    continue
                try:
                    bits, b_a, _ = solve_partition(prof, calib, p_cut, c_value, costs)
                except InfeasibleError:
                    continue
                worst = max(worst, probe.with_plan(p_cut, bits, b_a)[1])
            if worst <= safety * level:
                break
            c_value *= shrink
        calib.budgets[float(level)] = c_value
        bar.update()
    bar.close()
    return calib
