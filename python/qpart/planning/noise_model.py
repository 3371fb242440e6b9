"""The calibrated accuracy model as data: per-source noise curves (:class:`NoiseModel`) and
the budget curve ``C(a)`` of one model (:class:`Calibration`), with their JSON form. Nothing
here runs a network; :mod:`qpart.planning.calibration` measures these numbers."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .allocation import InfeasibleError

#: Default accuracy levels of the offline table (fractions: 0.1 % .. 2 %).
DEFAULT_LEVELS = (0.001, 0.0025, 0.005, 0.01, 0.02)
#: Widths the noise curves are measured at: the two ends of the useful range (a third,
#: middle width did not improve the held-out prediction error, benchmarks/RESULTS.md).
DEFAULT_WIDTHS = (2, 6)
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
    """Sensitivity of one model: per layer and per cut activation, and ``C(a)``.
    ``act_int8``: measured with the device layers on int8 activations (the integer kernels'
    numerics); the plans of this calibration are for devices that run that path."""

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
    act_int8: bool = False

    def budget(self, accuracy_loss: float) -> float:
        """``C(a)``: the calibrated budget of the largest level ``<= a`` (conservative step).
        Raises :class:`~qpart.planning.allocation.InfeasibleError` (``"accuracy"``, a
        ``ValueError``) for ``a`` below the smallest calibrated level."""
        levels = sorted(self.budgets)
        below = [lv for lv in levels if lv <= accuracy_loss * (1 + 1e-9)]
        if not below:
            raise InfeasibleError(
                "accuracy",
                f"accuracy budget {accuracy_loss:.4%} is below the smallest calibrated level "
                f"{levels[0]:.4%}; recalibrate with a smaller level",
            )
        return self.budgets[below[-1]]

    def predicted_loss(self, normalised_noise: float) -> float:
        """Predicted accuracy loss for ``D = sum p e^(-alpha b)/t``: log-log interpolation of
        the calibrated ``C(a)`` curve (clamped to its ends)."""
        levels = np.array(sorted(self.budgets))
        cs = np.array([self.budgets[lv] for lv in levels])
        if normalised_noise <= 0:
            return 0.0
        order = np.argsort(cs)
        return float(
            np.exp(
                np.interp(
                    np.log(normalised_noise), np.log(cs[order]), np.log(levels[order]), left=-np.inf
                )
            )
        )

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_VERSION,
            "layer_names": self.layer_names,
            "layers": [_nm_dict(m) for m in self.layers],
            "activations": {str(k): _nm_dict(m) for k, m in self.activations.items()},
            "budgets": [[lv, c] for lv, c in sorted(self.budgets.items())],
            "reference_drop": self.reference_drop,
            "margin_mean": self.margin_mean,
            "margin_median": self.margin_median,
            "seed": self.seed,
            "widths": list(self.widths),
            "safety": self.safety,
            "act_int8": self.act_int8,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        if d.get("format") != CALIBRATION_FORMAT or d.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"not a {CALIBRATION_FORMAT} v{CALIBRATION_VERSION} document")
        return cls(
            layer_names=list(d["layer_names"]),
            layers=[_nm_from(m) for m in d["layers"]],
            activations={int(k): _nm_from(m) for k, m in d["activations"].items()},
            budgets={float(lv): float(c) for lv, c in d["budgets"]},
            reference_drop=float(d["reference_drop"]),
            margin_mean=float(d["margin_mean"]),
            margin_median=float(d["margin_median"]),
            seed=int(d["seed"]),
            widths=tuple(d["widths"]),
            safety=float(d["safety"]),
            act_int8=bool(d.get("act_int8", False)),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the calibration as JSON."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Reads a calibration written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _nm_dict(m: NoiseModel) -> dict:
    d = asdict(m)
    d["measured"] = {str(k): v for k, v in m.measured.items()}
    return d


def _nm_from(d: dict) -> NoiseModel:
    return NoiseModel(
        float(d["p"]),
        float(d["alpha"]),
        float(d["t"]),
        {int(k): float(v) for k, v in d.get("measured", {}).items()},
    )
