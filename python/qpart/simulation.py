"""The simulation platform (paper §V; docs/SIMULATION.md): many requests with random device
profiles, channels and accuracy budgets, served by QPART and by the baselines of
:mod:`qpart.baselines`.

* :class:`ExecutingModule` - device and server compute (time, energy, server cost from the
  profiles) and the *real* split models of every configuration, run once on the evaluation
  digits (predictions cached), so every request's accuracy is measured, not predicted.
* :class:`CommunicationModule` - the channel: Rayleigh fading ``g ~ Exp(1)`` per request with
  3GPP path loss (``ChannelState.rayleigh``), transfer time and radio energy of the payloads.
* :class:`PerformanceModule` - per-request rows (time, energy, cost, objective, payload,
  accuracy) and the per-scheme aggregate; CSV and JSON output.

Every random quantity is drawn from :class:`RequestDistribution` with one seeded
``numpy.random.Generator``: equal seeds give identical results.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .baselines import (SCHEMES, SchemeConfig, autoencoder_config, closed_form_config,
                        no_opt_config, pick_pruning, pick_uniform, pruning_sweep,
                        quantized_config,
                        uniform_sweep)
from .allocation import InfeasibleError
from .calibration import Calibration
from .costs import (ChannelState, DeviceProfile, ObjectiveWeights, ServerProfile,
                    cost_coefficients)
from .models import accuracy
from .planner import PatternTable, Request, default_bit_costs
from .profile import ModelProfile
from .refinement import MeasuredRefiner


@dataclass(frozen=True)
class RequestDistribution:
    """Where requests come from (all independent, drawn in this order per request):

    * ``clock_hz``: log-uniform on the interval; ``cycles_per_mac``, ``tx_power_w``,
      ``distance_km``: uniform on their intervals;
    * ``bandwidths_hz``, ``budgets``: uniform choice;
    * fading gain ``g ~ Exp(1)`` (Rayleigh), giving the up/downlink capacities with
      ``server_tx_power_w`` for the downlink;
    * ``digit``: the evaluation sample the request classifies, uniform;
    * ``memory_bytes``: device memory, log-uniform on the interval, drawn from a second
      stream (``default_rng([seed, 1])``) so the other draws do not depend on it
      (``None``: unbounded).
    """

    clock_hz: tuple[float, float] = (100e6, 1e9)
    cycles_per_mac: tuple[float, float] = (2.0, 8.0)
    tx_power_w: tuple[float, float] = (0.1, 1.0)
    distance_km: tuple[float, float] = (0.05, 0.5)
    bandwidths_hz: tuple[float, ...] = (5e6, 10e6, 20e6)
    budgets: tuple[float, ...] = (0.005, 0.01, 0.02)
    server_tx_power_w: float = 10.0
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    memory_bytes: tuple[float, float] | None = None

    def sample(self, n: int, seed: int, n_digits: int = 1) -> list["SimRequest"]:
        """``n`` requests drawn with ``numpy.random.default_rng(seed)``."""
        if n < 1:
            raise ValueError(f"need at least one request, got {n}")
        rng = np.random.default_rng(seed)
        mem_rng = np.random.default_rng([seed, 1])
        out = []
        for i in range(n):
            lo, hi = self.clock_hz
            clock = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            cpm = float(rng.uniform(*self.cycles_per_mac))
            ptx = float(rng.uniform(*self.tx_power_w))
            dist = float(rng.uniform(*self.distance_km))
            bw = float(self.bandwidths_hz[int(rng.integers(len(self.bandwidths_hz)))])
            budget = float(self.budgets[int(rng.integers(len(self.budgets)))])
            fading = float(rng.exponential(1.0))
            digit = int(rng.integers(n_digits))
            mem = math.inf
            if self.memory_bytes is not None:
                mlo, mhi = self.memory_bytes
                mem = float(math.exp(mem_rng.uniform(math.log(mlo), math.log(mhi))))
            out.append(SimRequest(i, DeviceProfile(cpm, clock, tx_power_w=ptx, memory_bytes=mem),
                                  dist, bw, fading, budget, ObjectiveWeights(*self.weights),
                                  digit))
        return out


@dataclass(frozen=True)
class SimRequest:
    """One simulated request (the channel follows from distance, bandwidth and fading)."""

    index: int
    device: DeviceProfile
    distance_km: float
    bandwidth_hz: float
    fading_gain: float
    budget: float
    weights: ObjectiveWeights
    digit: int


class ExecutingModule:
    """Device / server compute and the measured behaviour of each configuration."""

    def __init__(self, x_eval: torch.Tensor, y_eval: torch.Tensor,
                 server: ServerProfile = ServerProfile()):
        self.x, self.y, self.server = x_eval, y_eval, server
        self._pred: dict[int, np.ndarray] = {}

    def predictions(self, cfg: SchemeConfig) -> np.ndarray:
        """Predicted classes of ``cfg``'s split model on every evaluation sample (cached)."""
        key = id(cfg)
        if key not in self._pred:
            with torch.inference_mode():
                out = [cfg.module(self.x[i:i + 1024]).argmax(-1)
                       for i in range(0, self.x.shape[0], 1024)]
            self._pred[key] = torch.cat(out).numpy()
        return self._pred[key]

    def accuracy(self, cfg: SchemeConfig) -> float:
        """Measured accuracy of ``cfg`` on the evaluation set."""
        return float((self.predictions(cfg) == self.y.numpy()).mean())

    def compute(self, cfg: SchemeConfig, device: DeviceProfile) -> dict[str, float]:
        """``T_loc = c_dev M_dev/f_dev``, ``E_loc = kappa f^2 c_dev M_dev``,
        ``T_srv = c_srv M_srv/f_srv``, ``S = mu T_srv``."""
        t_srv = self.server.cycles_per_mac * cfg.server_macs / self.server.clock_hz
        return {"device_time_s": device.cycles_per_mac * cfg.device_macs / device.clock_hz,
                "device_energy_j": device.energy_per_mac_j * cfg.device_macs,
                "server_time_s": t_srv, "server_cost": self.server.price_per_s * t_srv}


class CommunicationModule:
    """The wireless channel of each request and the transfer of the payloads."""

    def __init__(self, server_tx_power_w: float = 10.0, held_weights: bool = False):
        self.server_tx_power_w = server_tx_power_w
        self.held_weights = held_weights

    def channel(self, req: SimRequest) -> ChannelState:
        """Shannon capacities under the request's fading draw and path loss."""
        return ChannelState.rayleigh(req.distance_km, req.bandwidth_hz, req.device.tx_power_w,
                                     self.server_tx_power_w, fading_gain=req.fading_gain)

    def downloaded_bytes(self, cfg: SchemeConfig) -> int:
        """Weight bytes downloaded for a request: the segment's, or 0 when the device holds
        its segments (``held_weights``)."""
        return 0 if self.held_weights else cfg.weight_payload_bytes

    def transfer(self, cfg: SchemeConfig, device: DeviceProfile, channel: ChannelState) -> dict:
        """Weights down (``D_w/R_down``; 0 with ``held_weights``), activation up
        (``D_a/R_up``) and radio energy ``P_tx D_a/R_up + P_rx D_w/R_down``."""
        t_down = 8 * self.downloaded_bytes(cfg) / channel.downlink_bps
        t_up = 8 * cfg.activation_payload_bytes / channel.uplink_bps
        return {"tx_time_s": t_down + t_up,
                "tx_energy_j": device.tx_power_w * t_up + device.rx_power_w * t_down}


ROW_FIELDS = ("request", "scheme", "budget", "clock_hz", "cycles_per_mac", "tx_power_w",
              "distance_km", "bandwidth_hz", "fading_gain", "uplink_bps", "downlink_bps",
              "partition_point", "bits", "activation_bits", "device_time_s", "tx_time_s",
              "server_time_s", "total_time_s", "device_energy_j", "tx_energy_j",
              "total_energy_j", "server_cost", "objective", "weight_payload_bytes",
              "activation_payload_bytes", "payload_bytes", "accuracy", "accuracy_loss",
              "within_budget", "digit", "correct")


class PerformanceModule:
    """Collects one row per (request, scheme) and aggregates them per scheme."""

    def __init__(self, executing: ExecutingModule, communication: CommunicationModule,
                 float_accuracy: float):
        self.exe, self.comm, self.float_accuracy = executing, communication, float_accuracy
        self.rows: list[dict] = []

    def evaluate(self, cfg: SchemeConfig, req: SimRequest, channel: ChannelState) -> dict:
        """Every metric of ``cfg`` serving ``req`` (does not record it)."""
        c = self.exe.compute(cfg, req.device)
        t = self.comm.transfer(cfg, req.device, channel)
        w = req.weights
        total_t = c["device_time_s"] + t["tx_time_s"] + c["server_time_s"]
        total_e = c["device_energy_j"] + t["tx_energy_j"]
        acc = self.exe.accuracy(cfg)
        pred = self.exe.predictions(cfg)[req.digit]
        return {
            "request": req.index, "scheme": cfg.scheme, "budget": req.budget,
            "clock_hz": req.device.clock_hz, "cycles_per_mac": req.device.cycles_per_mac,
            "tx_power_w": req.device.tx_power_w, "distance_km": req.distance_km,
            "bandwidth_hz": req.bandwidth_hz, "fading_gain": req.fading_gain,
            "uplink_bps": channel.uplink_bps, "downlink_bps": channel.downlink_bps,
            "partition_point": cfg.p,
            "bits": "" if cfg.bits is None else " ".join(map(str, cfg.bits)),
            "activation_bits": "" if cfg.activation_bits is None else cfg.activation_bits,
            **c, **t, "total_time_s": total_t, "total_energy_j": total_e,
            "objective": w.time * total_t + w.energy * total_e + w.cost * c["server_cost"],
            "weight_payload_bytes": cfg.weight_payload_bytes,
            "activation_payload_bytes": cfg.activation_payload_bytes,
            "payload_bytes": self.comm.downloaded_bytes(cfg) + cfg.activation_payload_bytes,
            "accuracy": acc,
            "accuracy_loss": self.float_accuracy - acc,
            "within_budget": bool(self.float_accuracy - acc <= req.budget + 1e-9),
            "digit": req.digit, "correct": bool(int(pred) == int(self.exe.y[req.digit])),
        }

    def record(self, row: dict) -> None:
        self.rows.append(row)

    def summary(self) -> dict[str, dict]:
        """Per scheme: number of requests, means of the metrics, the fraction of requests
        within their budget, the per-request classification accuracy, the fraction of
        requests where the scheme had the lowest objective, and the partition points used."""
        by_req: dict[int, float] = {}
        for r in self.rows:
            by_req[r["request"]] = min(by_req.get(r["request"], math.inf), r["objective"])
        out: dict[str, dict] = {}
        for scheme in dict.fromkeys(r["scheme"] for r in self.rows):
            rows = [r for r in self.rows if r["scheme"] == scheme]
            mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
            points: dict[str, int] = {}
            for r in rows:
                points[str(r["partition_point"])] = points.get(str(r["partition_point"]), 0) + 1
            out[scheme] = {
                "requests": len(rows), "objective": mean("objective"),
                "objective_p95": float(np.percentile([r["objective"] for r in rows], 95)),
                "total_time_s": mean("total_time_s"), "total_energy_j": mean("total_energy_j"),
                "server_cost": mean("server_cost"), "payload_bytes": mean("payload_bytes"),
                "accuracy_loss": mean("accuracy_loss"), "within_budget": mean("within_budget"),
                "request_accuracy": mean("correct"),
                "lowest_objective": float(np.mean([r["objective"] <= by_req[r["request"]] * (1 + 1e-12)
                                                   for r in rows])),
                "partition_points": dict(sorted(points.items(), key=lambda kv: int(kv[0]))),
            }
        return out

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per (request, scheme), columns :data:`ROW_FIELDS`."""
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
            w.writeheader()
            w.writerows(self.rows)

    def write_json(self, path: str | os.PathLike[str], extra: dict | None = None) -> None:
        """``{"summary": {...per scheme}, **extra}``."""
        with open(path, "w") as f:
            json.dump({"format": "qpart-simulation", "version": 1,
                       "float_accuracy": self.float_accuracy, "summary": self.summary(),
                       **(extra or {})}, f, indent=1)


@dataclass
class SimulationSetup:
    """What a simulation needs: the model, its profile and calibration, the evaluation and
    training inputs. ``x_train`` (the acceptance inputs: normally held-out calibration digits
    the model was not trained on) trains the autoencoder, refines QPART's widths (``refine``,
    when no ``table`` is given) and tunes the uniform and pruning baselines, all with one
    acceptance rule: the flip rate against the float model's predictions on these inputs
    must be ``<= calib.safety * a`` (``y_tune`` holds the float predictions)."""

    model: nn.Module
    prof: ModelProfile
    calib: Calibration
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    x_train: torch.Tensor
    table: PatternTable | None = None
    refine: bool = True
    float_accuracy: float = field(init=False)
    y_tune: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self.float_accuracy = accuracy(self.model.eval(), self.x_eval, self.y_eval)
        with torch.inference_mode():
            self.y_tune = self.model(self.x_train).argmax(-1)
        if self.table is None:
            self.table = build_table(self.prof, self.calib, self.x_train, self.refine)


def build_table(prof: ModelProfile, calib: Calibration, x_accept: torch.Tensor,
                refine: bool = True) -> PatternTable:
    """QPART's pattern table (Table II costs), its widths refined by measurement on the
    acceptance inputs ``x_accept`` with the calibration's rule (flip rate ``<= safety * a``,
    :mod:`qpart.refinement`) unless ``refine`` is false."""
    refiner = MeasuredRefiner(prof, x_accept, calib.safety) if refine else None
    return PatternTable.build(prof, calib, refiner=refiner)


class Simulator:
    """Prepares every scheme's configuration at every valid partition point and accuracy
    level, then serves requests: each scheme picks, per request, the partition point (and
    for QPART the stored pattern, Algorithm 2) minimizing that request's objective among its
    configurations meeting the request's budget level."""

    def __init__(self, setup: SimulationSetup, *, schemes: Sequence[str] = SCHEMES,
                 levels: Sequence[float] = (0.005, 0.01, 0.02),
                 server: ServerProfile = ServerProfile(), server_tx_power_w: float = 10.0,
                 ae_steps: int = 600, seed: int = 0, progress: bool = True,
                 held_weights: bool = False):
        unknown = set(schemes) - set(SCHEMES)
        if unknown:
            raise ValueError(f"unknown schemes {sorted(unknown)}; known: {SCHEMES}")
        self.s, self.schemes, self.levels = setup, tuple(schemes), tuple(sorted(levels))
        self.server, self.seed, self.progress = server, seed, progress
        self.executing = ExecutingModule(setup.x_eval, setup.y_eval, server)
        self.communication = CommunicationModule(server_tx_power_w, held_weights)
        self.ae_steps = ae_steps
        #: configs[scheme][level] -> list over valid points (level-free schemes: key 0.0)
        self.configs: dict[str, dict[float, list[SchemeConfig]]] = {}
        self._qpart: dict[tuple, SchemeConfig] = {}
        self.uniform_sweeps: dict[int, dict] = {}
        self.pruning_sweeps: dict[int, list] = {}
        self._pruned: dict = {}
        self._prepared = False

    # -- preparation -------------------------------------------------------------------
    def qpart_for(self, p: int, bits: Sequence[int], b_a: int | None, level: float,
                  flip_rate: float | None = None) -> SchemeConfig:
        """The QPART configuration of a pattern (built once per distinct pattern);
        ``flip_rate``: its measured flip rate on the acceptance inputs, if refined."""
        key = (p, tuple(bits), b_a)
        if key not in self._qpart:
            extra = {} if flip_rate is None else {"acceptance_flip_rate": flip_rate}
            self._qpart[key] = quantized_config(self.s.prof, "qpart", p, bits, b_a, level=level,
                                                **extra)
        return self._qpart[key]

    def prepare(self) -> None:
        """Builds every config (uniform / pruning tuned on ``x_train``, see
        :class:`SimulationSetup`)."""
        if self._prepared:
            return
        from tqdm.auto import tqdm

        s, prof = self.s, self.s.prof
        coef = default_bit_costs(prof, server=self.server)
        points = prof.valid_points
        bar = tqdm(total=len(self.schemes) * len(points), desc="preparing schemes",
                   disable=not self.progress, leave=False)
        for scheme in self.schemes:
            per: dict[float, list[SchemeConfig]] = {}
            for p in points:
                if scheme == "no_opt":
                    per.setdefault(0.0, []).append(no_opt_config(prof, p))
                elif scheme == "autoencoder":
                    per.setdefault(0.0, []).append(autoencoder_config(
                        prof, p, s.x_train, steps=self.ae_steps, seed=self.seed))
                elif scheme == "uniform":
                    if p not in self.uniform_sweeps:
                        self.uniform_sweeps[p] = uniform_sweep(prof, p, s.x_train, s.y_tune)
                        for cfg, acc in self.uniform_sweeps[p].values():
                            cfg.detail["acceptance_flip_rate"] = 1.0 - acc
                    sweep = self.uniform_sweeps[p]
                    for lv in self.levels:
                        per.setdefault(lv, []).append(
                            pick_uniform(sweep, 1.0, s.calib.safety * lv)[0])
                for lv in self.levels:
                    if scheme == "qpart":
                        pl = next((x for x in s.table.patterns if x.partition_point == p
                                   and abs(x.accuracy_budget - lv) < 1e-12), None)
                        if pl is not None:
                            per.setdefault(lv, []).append(
                                self.qpart_for(p, pl.bits, pl.activation_bits, lv,
                                               pl.measured_flip_rate))
                    elif scheme == "closed_form":
                        try:
                            per.setdefault(lv, []).append(
                                closed_form_config(prof, s.calib, p, lv, coef))
                        except InfeasibleError:  # as QPART: no pattern at (p, level)
                            per.setdefault(lv, [])
                    elif scheme == "pruning":
                        if p not in self.pruning_sweeps:
                            self.pruning_sweeps[p] = pruning_sweep(prof, p, s.x_train, s.y_tune)
                        sweep = self.pruning_sweeps[p]
                        per.setdefault(lv, []).append(
                            pick_pruning(prof, p, sweep, 1.0, s.calib.safety * lv,
                                         self._pruned))
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

    def with_held_weights(self, held: bool = True) -> "Simulator":
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
            self.executing, self.communication, self.s.float_accuracy)
        return min(fit or cands[:1], key=lambda c: perf.evaluate(c, req, channel)["objective"])

    def _qpart_lookup(self, req: SimRequest, channel: ChannelState) -> SchemeConfig:
        table = self.s.table
        if self.communication.held_weights:
            coef = cost_coefficients(req.device, self.server, channel, req.weights)
            pl = table.patterns[table.lookup_index(coef, req.budget, req.device.memory_bytes,
                                                   np.ones(len(table), dtype=bool))]
        else:
            pl = table.lookup(Request(req.budget, req.device, channel, req.weights, self.server))
        return self.qpart_for(pl.partition_point, pl.bits, pl.activation_bits,
                              pl.accuracy_budget, pl.measured_flip_rate)

    # -- running -----------------------------------------------------------------------
    def run(self, requests: Iterable[SimRequest]) -> PerformanceModule:
        """Serves ``requests`` with every scheme; returns the filled performance module."""
        from tqdm.auto import tqdm

        self.prepare()
        perf = PerformanceModule(self.executing, self.communication, self.s.float_accuracy)
        self.performance_probe = perf
        requests = list(requests)
        for req in tqdm(requests, desc="simulating", unit="req", disable=not self.progress,
                        leave=False):
            channel = self.communication.channel(req)
            for scheme in self.schemes:
                perf.record(perf.evaluate(self.config_for(scheme, req, channel), req, channel))
        return perf

    def per_point_means(self, requests: Sequence[SimRequest]) -> list[dict]:
        """Each scheme held at each partition point over ``requests`` (its configuration for
        the request's budget level): mean objective, time, energy, server cost, payload."""
        self.prepare()
        perf = PerformanceModule(self.executing, self.communication, self.s.float_accuracy)
        keys = ("objective", "total_time_s", "total_energy_j", "server_cost", "payload_bytes",
                "accuracy_loss")
        acc: dict[tuple[str, int], dict[str, float]] = {}
        for req in requests:
            channel = self.communication.channel(req)
            for scheme in self.schemes:
                per = self.configs[scheme]
                for cfg in (per[0.0] if 0.0 in per else per[self.level_for(req.budget)]):
                    row = perf.evaluate(cfg, req, channel)
                    a = acc.setdefault((scheme, cfg.p), {k: 0.0 for k in keys} | {"n": 0})
                    for k in keys:
                        a[k] += row[k]
                    a["n"] += 1
        return [{"scheme": sc, "partition_point": p, "requests": a["n"],
                 **{k: a[k] / a["n"] for k in keys}} for (sc, p), a in acc.items()]

    def fixed_point_rows(self, level: float, device: DeviceProfile = DeviceProfile(),
                         channel: ChannelState = ChannelState(),
                         weights: ObjectiveWeights = ObjectiveWeights()) -> list[dict]:
        """Every scheme at every partition point for one request (default: Table II) - the
        data of the paper's Table III and Figs. 5, 7-10."""
        self.prepare()
        perf = PerformanceModule(self.executing, self.communication, self.s.float_accuracy)
        req = SimRequest(-1, device, 0.0, 0.0, 1.0, level, weights, 0)
        rows = []
        for scheme in self.schemes:
            per = self.configs[scheme]
            for cfg in (per[0.0] if 0.0 in per else per[self.level_for(level)]):
                row = perf.evaluate(cfg, req, channel)
                row.update({"weight_ratio": cfg.weight_ratio,
                            "fp32_weight_bytes": cfg.fp32_weight_bytes,
                            "fp32_activation_bytes": cfg.fp32_activation_bytes,
                            "detail": {k: v for k, v in cfg.detail.items()
                                       if k not in ("continuous_bits",)}})
                rows.append(row)
        return rows


def simulate(setup: SimulationSetup, n_requests: int, seed: int = 0,
             distribution: RequestDistribution = RequestDistribution(),
             schemes: Sequence[str] = SCHEMES, out_dir: str | os.PathLike[str] | None = None,
             progress: bool = True, ae_steps: int = 600,
             held_weights: bool = False) -> tuple[Simulator, PerformanceModule]:
    """Draws ``n_requests`` requests (``seed``), serves them with every scheme and (with
    ``out_dir``) writes ``requests.csv`` and ``summary.json`` there. ``held_weights``: the
    devices hold their segments (no weight download per request; device memory from the
    distribution's ``memory_bytes`` limits which segments fit)."""
    sim = Simulator(setup, schemes=schemes or SCHEMES, levels=sorted(set(distribution.budgets)),
                    server_tx_power_w=distribution.server_tx_power_w, seed=seed,
                    progress=progress, ae_steps=ae_steps, held_weights=held_weights)
    reqs = distribution.sample(n_requests, seed, n_digits=setup.x_eval.shape[0])
    perf = sim.run(reqs)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        perf.write_csv(os.path.join(out_dir, "requests.csv"))
        perf.write_json(os.path.join(out_dir, "summary.json"),
                        {"seed": seed, "requests": n_requests, "held_weights": held_weights,
                         "distribution": asdict(distribution),
                         "configs": {sc: {str(lv): [c.summary() for c in cs]
                                          for lv, cs in per.items()}
                                     for sc, per in sim.configs.items()}})
    return sim, perf
