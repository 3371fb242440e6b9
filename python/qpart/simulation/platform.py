"""The simulation platform's modules (paper §V; docs/SIMULATION.md):

* :class:`ExecutingModule` - device and server compute (time, energy, server cost from the
  profiles) and the *real* split models of every configuration, run once on the evaluation
  digits (predictions cached), so every request's accuracy is measured, not predicted.
* :class:`CommunicationModule` - the channel: Rayleigh fading ``g ~ Exp(1)`` per request with
  3GPP path loss (``ChannelState.rayleigh``), transfer time and radio energy of the payloads.
* :class:`PerformanceModule` - per-request rows (time, energy, cost, objective, payload,
  accuracy) and the per-scheme aggregate; CSV and JSON output.
"""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import torch

from ..core.costs import ChannelState, DeviceProfile, ServerProfile
from ..core.metrics import predictions
from .baselines import SchemeConfig
from .requests import SimRequest


class ExecutingModule:
    """Device / server compute and the measured behaviour of each configuration."""

    def __init__(
        self, x_eval: torch.Tensor, y_eval: torch.Tensor, server: ServerProfile = ServerProfile()
    ):
        self.x, self.y, self.server = x_eval, y_eval, server
        self._pred: dict[int, np.ndarray] = {}

    def predictions(self, cfg: SchemeConfig) -> np.ndarray:
        """Predicted classes of ``cfg``'s split model on every evaluation sample (cached)."""
        key = id(cfg)
        if key not in self._pred:
            self._pred[key] = predictions(cfg.module, self.x).numpy()
        return self._pred[key]

    def accuracy(self, cfg: SchemeConfig) -> float:
        """Measured accuracy of ``cfg`` on the evaluation set."""
        return float((self.predictions(cfg) == self.y.numpy()).mean())

    def compute(self, cfg: SchemeConfig, device: DeviceProfile) -> dict[str, float]:
        """``T_loc = c_dev M_dev/f_dev``, ``E_loc = kappa f^2 c_dev M_dev``,
        ``T_srv = c_srv M_srv/f_srv``, ``S = mu T_srv``."""
        t_srv = self.server.cycles_per_mac * cfg.server_macs / self.server.clock_hz
        return {
            "device_time_s": device.cycles_per_mac * cfg.device_macs / device.clock_hz,
            "device_energy_j": device.energy_per_mac_j * cfg.device_macs,
            "server_time_s": t_srv,
            "server_cost": self.server.price_per_s * t_srv,
        }


class CommunicationModule:
    """The wireless channel of each request and the transfer of the payloads."""

    def __init__(self, server_tx_power_w: float = 10.0, held_weights: bool = False):
        self.server_tx_power_w = server_tx_power_w
        self.held_weights = held_weights

    def channel(self, req: SimRequest) -> ChannelState:
        """Shannon capacities under the request's fading draw and path loss."""
        return ChannelState.rayleigh(
            req.distance_km,
            req.bandwidth_hz,
            req.device.tx_power_w,
            self.server_tx_power_w,
            fading_gain=req.fading_gain,
        )

    def downloaded_bytes(self, cfg: SchemeConfig) -> int:
        """Weight bytes downloaded for a request: the segment's, or 0 when the device holds
        its segments (``held_weights``)."""
        return 0 if self.held_weights else cfg.weight_payload_bytes

    def transfer(self, cfg: SchemeConfig, device: DeviceProfile, channel: ChannelState) -> dict:
        """Weights down (``D_w/R_down``; 0 with ``held_weights``), activation up
        (``D_a/R_up``) and radio energy ``P_tx D_a/R_up + P_rx D_w/R_down``."""
        t_down = 8 * self.downloaded_bytes(cfg) / channel.downlink_bps
        t_up = 8 * cfg.activation_payload_bytes / channel.uplink_bps
        return {
            "tx_time_s": t_down + t_up,
            "tx_energy_j": device.tx_power_w * t_up + device.rx_power_w * t_down,
        }


ROW_FIELDS = (
    "request",
    "scheme",
    "budget",
    "clock_hz",
    "cycles_per_mac",
    "tx_power_w",
    "distance_km",
    "bandwidth_hz",
    "fading_gain",
    "uplink_bps",
    "downlink_bps",
    "partition_point",
    "bits",
    "activation_bits",
    "device_time_s",
    "tx_time_s",
    "server_time_s",
    "total_time_s",
    "device_energy_j",
    "tx_energy_j",
    "total_energy_j",
    "server_cost",
    "objective",
    "weight_payload_bytes",
    "activation_payload_bytes",
    "payload_bytes",
    "accuracy",
    "accuracy_loss",
    "within_budget",
    "digit",
    "correct",
)


class PerformanceModule:
    """Collects one row per (request, scheme) and aggregates them per scheme."""

    def __init__(
        self, executing: ExecutingModule, communication: CommunicationModule, float_accuracy: float
    ):
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
            "request": req.index,
            "scheme": cfg.scheme,
            "budget": req.budget,
            "clock_hz": req.device.clock_hz,
            "cycles_per_mac": req.device.cycles_per_mac,
            "tx_power_w": req.device.tx_power_w,
            "distance_km": req.distance_km,
            "bandwidth_hz": req.bandwidth_hz,
            "fading_gain": req.fading_gain,
            "uplink_bps": channel.uplink_bps,
            "downlink_bps": channel.downlink_bps,
            "partition_point": cfg.p,
            "bits": "" if cfg.bits is None else " ".join(map(str, cfg.bits)),
            "activation_bits": "" if cfg.activation_bits is None else cfg.activation_bits,
            **c,
            **t,
            "total_time_s": total_t,
            "total_energy_j": total_e,
            "objective": w.time * total_t + w.energy * total_e + w.cost * c["server_cost"],
            "weight_payload_bytes": cfg.weight_payload_bytes,
            "activation_payload_bytes": cfg.activation_payload_bytes,
            "payload_bytes": self.comm.downloaded_bytes(cfg) + cfg.activation_payload_bytes,
            "accuracy": acc,
            "accuracy_loss": self.float_accuracy - acc,
            "within_budget": bool(self.float_accuracy - acc <= req.budget + 1e-9),
            "digit": req.digit,
            "correct": bool(int(pred) == int(self.exe.y[req.digit])),
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
            mean = lambda k, rows=rows: float(np.mean([r[k] for r in rows]))
            points: dict[str, int] = {}
            for r in rows:
                points[str(r["partition_point"])] = points.get(str(r["partition_point"]), 0) + 1
            out[scheme] = {
                "requests": len(rows),
                "objective": mean("objective"),
                "objective_p95": float(np.percentile([r["objective"] for r in rows], 95)),
                "total_time_s": mean("total_time_s"),
                "total_energy_j": mean("total_energy_j"),
                "server_cost": mean("server_cost"),
                "payload_bytes": mean("payload_bytes"),
                "accuracy_loss": mean("accuracy_loss"),
                "within_budget": mean("within_budget"),
                "request_accuracy": mean("correct"),
                "lowest_objective": float(
                    np.mean([r["objective"] <= by_req[r["request"]] * (1 + 1e-12) for r in rows])
                ),
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
            json.dump(
                {
                    "format": "qpart-simulation",
                    "version": 1,
                    "float_accuracy": self.float_accuracy,
                    "summary": self.summary(),
                    **(extra or {}),
                },
                f,
                indent=1,
            )
