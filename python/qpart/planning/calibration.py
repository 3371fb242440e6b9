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
from pathlib import Path

import torch
from torch import nn

from ..core.metrics import AgreementSpec
from ..core.profile import ModelProfile
from ..core.profile import profile as profile_model
from .allocation import InfeasibleError
from .noise_model import DEFAULT_LEVELS, DEFAULT_WIDTHS, Calibration
from .probe import Probe, quantized_weight
from .robustness import allowed_disagreements
from .solve import default_bit_costs, solve_partition
from .sources import source_models

#: Bump when the calibration procedure changes: part of :func:`cached_calibration`'s file
#: name, so a cache written by another procedure is not read back.
CALIBRATION_PROCEDURE = 5
#: Cumulative fractions of the inputs (in ascending-margin order) at which a closed-loop
#: plan measurement may stop once it has exceeded its disagreement limit.
CHUNK_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def adversarial_margins(logits: torch.Tensor) -> torch.Tensor:
    """``||r*|| = min_{j != k} (z_k - z_j) / sqrt(2)`` per sample (``k`` the predicted class;
    outputs flattened per sample; zero for one-element outputs)."""
    flat = logits.reshape(logits.shape[0], -1)
    if flat.shape[1] < 2:
        return torch.zeros(flat.shape[0])
    top2 = flat.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)


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
    layer_models, act_models = source_models(probe, prof, widths, reference_drop, seed, bar, order)

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

    # The largest C a lower level passed: its plans passed a limit no higher than any later
    # level's, so it passes those too - C(a) never drops below it (and the loop stops there).
    passed_below = 0.0
    for level in sorted(levels):
        bar.set_description(f"calibrating: closed loop C({level:g})")
        c_value = energy_for(level) / e_ref
        limit = allowed_disagreements(safety * level, probe.n)
        for _ in range(max_shrink_steps):
            if c_value <= passed_below:
                c_value = passed_below
                break
            if passes(c_value, limit):
                break
            c_value *= shrink
        else:  # out of steps: the last C was not measured to pass
            calib.budgets[float(level)] = c_value
            bar.update()
            continue
        calib.budgets[float(level)] = c_value
        passed_below = max(passed_below, c_value)
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
