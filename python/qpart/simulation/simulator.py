"""The simulator (paper §V; docs/SIMULATION.md): many requests with random device profiles,
channels and accuracy budgets (:mod:`.requests`), served by QPART and by the baselines of
:mod:`.baselines` on the modules of :mod:`.platform`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.costs import (
    ChannelState,
    DeviceProfile,
    ObjectiveWeights,
    ServerProfile,
    cost_coefficients,
)
from ..core.metrics import AgreementSpec, accuracy
from ..core.profile import ModelProfile
from ..planning.acceptance import AcceptanceRule
from ..planning.allocation import InfeasibleError
from ..planning.bounds import DEFAULT_CONFIDENCE
from ..planning.heldout import HeldOutAcceptance
from ..planning.noise_model import Calibration
from ..planning.refinement import MeasuredRefiner
from ..planning.solve import default_bit_costs
from ..planning.table import PatternTable, Request
from .baselines import (
    SCHEMES,
    SchemeConfig,
    float_fallback,
    qpart_pattern_config,
    registered_schemes,
    scheme_builder,
)
from .platform import CommunicationModule, ExecutingModule, PerformanceModule
from .requests import RequestDistribution, SimRequest


@dataclass
class SimulationSetup:
    """What a simulation needs: the model, its profile and calibration, the evaluation and
    training inputs. ``x_train`` (the *selection* inputs: normally the held-out calibration
    digits the model was not trained on) trains the autoencoder and refines QPART's widths
    (``refine``, when no ``table`` is given) with the selection rule (disagreement rate
    ``<= calib.safety * a``; ``y_tune`` holds the float predictions).

    ``x_accept`` (optional; disjoint from ``x_train``, never used to choose anything): the
    acceptance split. Then every scheme's configuration - QPART's table patterns, the
    uniform widths, the pruning sparsities - serves budget ``a`` only if its one-sided
    Clopper-Pearson upper bound (``confidence``) of the disagreement rate on ``x_accept`` is
    ``<= a`` (:mod:`qpart.planning.heldout`); a scheme with no such configuration at a point
    sends the float segment there. Without ``x_accept`` the uniform and pruning baselines
    are tuned on ``x_train`` with the selection rule and QPART serves by design level.
    ``agreement``: what counts as the same answer (default top-1), for every scheme."""

    model: nn.Module
    prof: ModelProfile
    calib: Calibration
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    x_train: torch.Tensor
    table: PatternTable | None = None
    refine: bool = True
    x_accept: torch.Tensor | None = None
    confidence: float = DEFAULT_CONFIDENCE
    agreement: AgreementSpec = None
    float_accuracy: float = field(init=False)
    y_tune: torch.Tensor = field(init=False, repr=False)
    acceptance: HeldOutAcceptance | None = field(init=False, repr=False)

    def __post_init__(self):
        self.float_accuracy = accuracy(self.model.eval(), self.x_eval, self.y_eval)
        with torch.inference_mode():
            self.y_tune = self.model(self.x_train).argmax(-1)
        self.acceptance = None
        if self.x_accept is not None:
            self.acceptance = HeldOutAcceptance(
                self.prof, self.x_accept, confidence=self.confidence, agreement=self.agreement
            )
        if self.table is None:
            self.table = build_table(
                self.prof,
                self.calib,
                self.x_train,
                self.refine,
                acceptance=self.acceptance,
                agreement=self.agreement,
            )


def build_table(
    prof: ModelProfile,
    calib: Calibration,
    x_select: torch.Tensor,
    refine: bool = True,
    *,
    acceptance: HeldOutAcceptance | None = None,
    agreement: AgreementSpec = None,
) -> PatternTable:
    """QPART's pattern table (Table II costs), its widths refined by measurement on the
    selection inputs ``x_select`` with the calibration's rule (disagreement rate ``<= safety
    * a``, :mod:`qpart.planning.refinement`) unless ``refine`` is false, then (with
    ``acceptance``) measured on the held-out acceptance split."""
    refiner = MeasuredRefiner(prof, x_select, calib.safety, agreement=agreement) if refine else None
    return PatternTable.build(prof, calib, refiner=refiner, acceptance=acceptance)


class Simulator:
    """Prepares every scheme's configuration at every valid partition point and accuracy
    level, then serves requests: each scheme picks, per request, the partition point (and
    for QPART the stored pattern, Algorithm 2) minimizing that request's objective among its
    configurations meeting the request's budget level."""

    def __init__(
        self,
        setup: SimulationSetup,
        *,
        schemes: Sequence[str] = SCHEMES,
        levels: Sequence[float] = (0.005, 0.01, 0.02),
        server: ServerProfile = ServerProfile(),
        server_tx_power_w: float = 10.0,
        ae_steps: int = 600,
        seed: int = 0,
        progress: bool = True,
        held_weights: bool = False,
    ):
        unknown = set(schemes) - set(registered_schemes())
        if unknown:
            raise ValueError(f"unknown schemes {sorted(unknown)}; known: {registered_schemes()}")
        self.s, self.schemes, self.levels = setup, tuple(schemes), tuple(sorted(levels))
        self.server, self.seed, self.progress = server, seed, progress
        self.executing = ExecutingModule(setup.x_eval, setup.y_eval, server)
        self.communication = CommunicationModule(server_tx_power_w, held_weights)
        self.ae_steps = ae_steps
        #: configs[scheme][level] -> list over valid points (level-free schemes: key 0.0)
        self.configs: dict[str, dict[float, list[SchemeConfig]]] = {}
        # The scheme builders' context (qpart.simulation.baselines.SchemeContext): the
        # setup's fields (properties below), the acceptance rule and these caches.
        self.rule = AcceptanceRule(setup.calib.safety)
        self.coefficients = default_bit_costs(setup.prof, server=server)
        self.qpart_configs: dict[tuple, SchemeConfig] = {}
        self.uniform_sweeps: dict[int, dict] = {}
        self.pruning_sweeps: dict[int, list] = {}
        self.pruned: dict = {}
        self._prepared = False

    @property
    def prof(self) -> ModelProfile:
        return self.s.prof

    @property
    def calib(self) -> Calibration:
        return self.s.calib

    @property
    def table(self) -> PatternTable:
        return self.s.table

    @property
    def x_train(self) -> torch.Tensor:
        return self.s.x_train

    @property
    def y_tune(self) -> torch.Tensor:
        return self.s.y_tune

    @property
    def acceptance(self) -> HeldOutAcceptance | None:
        return self.s.acceptance

    # -- preparation -------------------------------------------------------------------
    def prepare(self) -> None:
        """Builds every scheme's configurations with its registered builder
        (:func:`qpart.simulation.baselines.register_scheme`; uniform / pruning tuned on
        ``x_train``, see :class:`SimulationSetup`)."""
        if self._prepared:
            return
        from tqdm.auto import tqdm

        points = self.prof.valid_points
        bar = tqdm(
            total=len(self.schemes) * len(points),
            desc="preparing schemes",
            disable=not self.progress,
            leave=False,
        )
        for scheme in self.schemes:
            build = scheme_builder(scheme)
            per: dict[float, list[SchemeConfig]] = {}
            for p in points:
                for lv, cfg in build(self, p).items():
                    configs = per.setdefault(lv, [])
                    if cfg is not None:
                        configs.append(cfg)
                bar.update()
            self.configs[scheme] = per
        bar.close()
        self._prepared = True

    def level_for(self, budget: float) -> float:
        """The largest prepared level not above ``budget``."""
        below = [lv for lv in self.levels if lv <= budget * (1 + 1e-9)]
        if not below:
            raise ValueError(f"budget {budget} is below every simulated level {self.levels}")
        return below[-1]

    def with_held_weights(self, held: bool = True) -> Simulator:
        """A simulator sharing this one's prepared configurations (and cached predictions)
        whose devices hold their segments (``held``: no weight download per request)."""
        other = copy.copy(self)
        other.communication = CommunicationModule(self.communication.server_tx_power_w, held)
        other.performance_probe = None
        return other

    def config_for(self, scheme: str, req: SimRequest, channel: ChannelState) -> SchemeConfig:
        """The configuration ``scheme`` uses for ``req``: the cheapest of its configurations
        for the request's budget level that fit the device memory (QPART: the table lookup,
        Algorithm 2, with the weight-download term dropped when the segments are held)."""
        if scheme == "qpart":
            return self._qpart_lookup(req, channel)
        per = self.configs[scheme]
        cands = per[0.0] if 0.0 in per else per[self.level_for(req.budget)]
        fit = [c for c in cands if c.memory_bytes <= req.device.memory_bytes]
        perf = getattr(self, "performance_probe", None) or PerformanceModule(
            self.executing, self.communication, self.s.float_accuracy
        )
        return min(fit or cands[:1], key=lambda c: perf.evaluate(c, req, channel)["objective"])

    def _qpart_lookup(self, req: SimRequest, channel: ChannelState) -> SchemeConfig:
        """Algorithm 2; when no pattern may serve the budget (held-out bounds all above it),
        the float segment at the cheapest point (as every scheme without an accepted
        configuration)."""
        table = self.s.table
        try:
            if self.communication.held_weights:
                coef = cost_coefficients(req.device, self.server, channel, req.weights)
                pl = table.patterns[
                    table.lookup_index(
                        coef, req.budget, req.device.memory_bytes, np.ones(len(table), dtype=bool)
                    )
                ]
            else:
                pl = table.lookup(
                    Request(req.budget, req.device, channel, req.weights, self.server)
                )
        except InfeasibleError as exc:
            if exc.constraint != "accuracy":
                raise
            cands = [float_fallback(self, p, "qpart") for p in self.prof.valid_points]
            fit = [c for c in cands if c.memory_bytes <= req.device.memory_bytes] or cands[:1]
            perf = getattr(self, "performance_probe", None) or PerformanceModule(
                self.executing, self.communication, self.s.float_accuracy
            )
            return min(fit, key=lambda c: perf.evaluate(c, req, channel)["objective"])
        return qpart_pattern_config(self, pl, pl.accuracy_budget)

    # -- running -----------------------------------------------------------------------
    def run(self, requests: Iterable[SimRequest]) -> PerformanceModule:
        """Serves ``requests`` with every scheme; returns the filled performance module."""
        from tqdm.auto import tqdm

        self.prepare()
        perf = PerformanceModule(self.executing, self.communication, self.s.float_accuracy)
        self.performance_probe = perf
        requests = list(requests)
        for req in tqdm(
            requests, desc="simulating", unit="req", disable=not self.progress, leave=False
        ):
            channel = self.communication.channel(req)
            for scheme in self.schemes:
                perf.record(perf.evaluate(self.config_for(scheme, req, channel), req, channel))
        return perf

    def per_point_means(self, requests: Sequence[SimRequest]) -> list[dict]:
        """Each scheme held at each partition point over ``requests`` (its configuration for
        the request's budget level): mean objective, time, energy, server cost, payload."""
        self.prepare()
        perf = PerformanceModule(self.executing, self.communication, self.s.float_accuracy)
        keys = (
            "objective",
            "total_time_s",
            "total_energy_j",
            "server_cost",
            "payload_bytes",
            "accuracy_loss",
        )
        acc: dict[tuple[str, int], dict[str, float]] = {}
        for req in requests:
            channel = self.communication.channel(req)
            for scheme in self.schemes:
                per = self.configs[scheme]
                for cfg in per[0.0] if 0.0 in per else per[self.level_for(req.budget)]:
                    row = perf.evaluate(cfg, req, channel)
                    a = acc.setdefault((scheme, cfg.p), {k: 0.0 for k in keys} | {"n": 0})
                    for k in keys:
                        a[k] += row[k]
                    a["n"] += 1
        return [
            {
                "scheme": sc,
                "partition_point": p,
                "requests": a["n"],
                **{k: a[k] / a["n"] for k in keys},
            }
            for (sc, p), a in acc.items()
        ]

    def fixed_point_rows(
        self,
        level: float,
        device: DeviceProfile = DeviceProfile(),
        channel: ChannelState = ChannelState(),
        weights: ObjectiveWeights = ObjectiveWeights(),
    ) -> list[dict]:
        """Every scheme at every partition point for one request (default: Table II) - the
        data of the paper's Table III and Figs. 5, 7-10."""
        self.prepare()
        perf = PerformanceModule(self.executing, self.communication, self.s.float_accuracy)
        req = SimRequest(-1, device, 0.0, 0.0, 1.0, level, weights, 0)
        rows = []
        for scheme in self.schemes:
            per = self.configs[scheme]
            for cfg in per[0.0] if 0.0 in per else per[self.level_for(level)]:
                row = perf.evaluate(cfg, req, channel)
                row.update(
                    {
                        "weight_ratio": cfg.weight_ratio,
                        "fp32_weight_bytes": cfg.fp32_weight_bytes,
                        "fp32_activation_bytes": cfg.fp32_activation_bytes,
                        "detail": {
                            k: v for k, v in cfg.detail.items() if k not in ("continuous_bits",)
                        },
                    }
                )
                rows.append(row)
        return rows


def simulate(
    setup: SimulationSetup,
    n_requests: int,
    seed: int = 0,
    distribution: RequestDistribution = RequestDistribution(),
    schemes: Sequence[str] = SCHEMES,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    ae_steps: int = 600,
    held_weights: bool = False,
) -> tuple[Simulator, PerformanceModule]:
    """Draws ``n_requests`` requests (``seed``), serves them with every scheme and (with
    ``out_dir``) writes ``requests.csv`` and ``summary.json`` there. ``held_weights``: the
    devices hold their segments (no weight download per request; device memory from the
    distribution's ``memory_bytes`` limits which segments fit)."""
    sim = Simulator(
        setup,
        schemes=schemes or SCHEMES,
        levels=sorted(set(distribution.budgets)),
        server_tx_power_w=distribution.server_tx_power_w,
        seed=seed,
        progress=progress,
        ae_steps=ae_steps,
        held_weights=held_weights,
    )
    reqs = distribution.sample(n_requests, seed, n_digits=setup.x_eval.shape[0])
    perf = sim.run(reqs)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        perf.write_csv(os.path.join(out_dir, "requests.csv"))
        perf.write_json(
            os.path.join(out_dir, "summary.json"),
            {
                "seed": seed,
                "requests": n_requests,
                "held_weights": held_weights,
                "distribution": asdict(distribution),
                "configs": {
                    sc: {str(lv): [c.summary() for c in cs] for lv, cs in per.items()}
                    for sc, per in sim.configs.items()
                },
            },
        )
    return sim, perf
