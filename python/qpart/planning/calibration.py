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

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.metrics import AgreementSpec
from ..core.profile import ModelProfile
from ..core.profile import profile as profile_model
from ..core.split import roundtrip_activation
from .allocation import InfeasibleError
from .noise_model import DEFAULT_LEVELS, DEFAULT_WIDTHS, Calibration, NoiseModel
from .probe import Probe, quantized_weight
from .solve import default_bit_costs, solve_partition


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


def _uniform_weight_noise(w: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    w2 = w.detach().reshape(w.shape[0], -1).float()
    step = (w2.max(1, keepdim=True).values - w2.min(1, keepdim=True).values) * scale
    return w2 + step * (torch.rand(w2.shape, generator=gen) - 0.5)


def _uniform_activation_noise(x: torch.Tensor, scale: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    flat = x.reshape(x.shape[0], -1)
    step = (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values) * scale
    return (flat + step * (torch.rand(flat.shape, generator=gen) - 0.5)).reshape(x.shape)


class _NoisyWeight:
    """``_uniform_weight_noise(w, scale, seed)`` with the range and the (seeded, hence
    identical for every scale) noise pattern drawn once."""

    def __init__(self, w: torch.Tensor, seed: int):
        w2 = w.detach().reshape(w.shape[0], -1).float()
        self.w2 = w2
        self.span = w2.max(1, keepdim=True).values - w2.min(1, keepdim=True).values
        self.noise = torch.rand(w2.shape, generator=torch.Generator().manual_seed(seed)) - 0.5

    def __call__(self, scale: float) -> torch.Tensor:
        return self.w2 + (self.span * scale) * self.noise


class _NoisyActivation:
    """``_uniform_activation_noise(x, scale, seed)`` with the per-sample range and the noise
    pattern of the (fixed) cut value computed once."""

    def __init__(self, seed: int):
        self.seed, self.key, self.parts = seed, None, None

    def __call__(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        if self.key is not x:
            flat = x.reshape(x.shape[0], -1)
            span = flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values
            gen = torch.Generator().manual_seed(self.seed)
            self.key, self.parts = x, (flat, span, torch.rand(flat.shape, generator=gen) - 0.5)
        flat, span, noise = self.parts
        return (flat + (span * scale) * noise).reshape(x.shape)


def _bisect_scale(measure, target_flips: float, iters: int = 11) -> float:
    """Smallest noise scale (log bisection) whose flip rate reaches ``target_flips``;
    returns the logit-noise energy measured there."""
    lo, hi = -14.0, 3.0  # log2 of the step relative to the range
    e_hi, f_hi = measure(2.0**hi)
    if f_hi < target_flips:
        return e_hi
    e_at = e_hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        e, f = measure(2.0**mid)
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
    agreement: AgreementSpec = None,
) -> Calibration:
    """Calibrates the accuracy model of ``model`` on inputs ``x`` (no labels needed: the
    float model's own predictions are the reference, so the flip rate bounds the loss).

    ``levels``: accuracy losses (fractions) to calibrate ``C(a)`` for; ``widths``: bit widths
    at which the noise curves are measured; ``reference_drop``: flip rate defining the
    robustness ``t``; ``safety``: the closed loop keeps the measured flip rate of the planned
    configurations at or below ``safety * a``; ``threads``: torch intra-op threads while
    calibrating (1 is fastest for these small, many passes on a loaded machine; restored
    afterwards; ``None`` keeps the current setting); ``agreement``: what counts as the
    same answer as the float model (:func:`qpart.core.metrics.agreement`; top-1 by
    default) - every "flip rate" here is that metric's disagreement rate. See the module
    docstring.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
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
    probe = Probe(prof, x, agreement_spec)
    margins = adversarial_margins(probe.ref)
    gen = torch.Generator()
    n_sources = prof.num_layers + len(prof.cuts)
    bar = tqdm(total=n_sources + len(levels), desc="calibrating", disable=not progress, leave=False)

    layer_models: list[NoiseModel] = []
    for i, layer in enumerate(prof.layers):
        w = probe.modules[layer.name].weight
        energies = {b: probe.with_weight(layer.name, quantized_weight(w, b))[0] for b in widths}
        p, alpha = _fit(list(energies), list(energies.values()))

        noisy = _NoisyWeight(w, seed * 1000 + i)

        def measure(scale, name=layer.name, noisy=noisy):
            return probe.with_weight(name, noisy(scale))

        t = _bisect_scale(measure, reference_drop)
        layer_models.append(NoiseModel(p, alpha, max(t, 1e-30), energies))
        bar.update()

    act_models: dict[int, NoiseModel] = {}
    for p_cut in sorted(prof.cuts):
        energies = {b: probe.with_activation(p_cut, roundtrip_activation, b)[0] for b in widths}
        p, alpha = _fit(list(energies), list(energies.values()))
        noisy_act = _NoisyActivation(seed * 1000 + 500 + p_cut)
        t = _bisect_scale(
            lambda s, p_cut=p_cut, f=noisy_act: probe.with_activation(p_cut, f, s),
            reference_drop,
        )
        act_models[p_cut] = NoiseModel(p, alpha, max(t, 1e-30), energies)
        bar.update()

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
    )
    costs = default_bit_costs(prof)
    points = [p for p in prof.valid_points if p != 0 or 0 in prof.cuts]
    measured: dict[tuple, float] = {}  # flip rate per configuration, across steps and levels
    weights: dict[tuple[str, int], torch.Tensor] = {}

    def weight(name: str, b: int) -> torch.Tensor:
        if (name, b) not in weights:
            weights[(name, b)] = quantized_weight(probe.modules[name].weight, b)
        return weights[(name, b)]

    def passes(c_value: float, limit: float) -> bool:
        """Whether every point's plan at ``C = c_value`` flips at most ``limit``; stops at
        the first failing point and tries it first next time (the decision equals the
        maximum over all points; measurements are cached per configuration)."""
        for p_cut in list(points):
            try:
                bits, b_a, _ = solve_partition(prof, calib, p_cut, c_value, costs)
            except InfeasibleError:
                continue
            key = (p_cut, tuple(bits), b_a)
            if key not in measured:
                measured[key] = probe.with_plan(p_cut, bits, b_a, weight)[1]
                bar.set_postfix_str(f"closed loop: {len(measured)} plans measured")
            if measured[key] > limit:
                points.remove(p_cut)
                points.insert(0, p_cut)
                return False
        return True

    for level in sorted(levels):
        bar.set_description(f"calibrating: C({level:g})")
        c_value = energy_for(level) / e_ref
        for _ in range(max_shrink_steps):
            if passes(c_value, safety * level):
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
) -> tuple[Calibration, Path, bool]:
    """Calibration of ``model`` on ``x``, cached as JSON under ``cache_dir`` (file name
    includes a digest of the weights and the sample count). Returns ``(calib, path, hit)``."""
    path = Path(cache_dir).expanduser() / (
        f"{name}_calib_n{x.shape[0]}_seed{seed}_{_weights_digest(model)}.json"
    )
    if path.is_file():
        return Calibration.load(path), path, True
    calib = calibrate(model, x, prof=prof, seed=seed, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    calib.save(tmp)
    os.replace(tmp, path)
    return calib, path, False
