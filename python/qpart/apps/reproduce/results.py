"""What one ``qpart reproduce`` run measured: :class:`ReproductionResults`, built by
:mod:`.run` and read whole by :mod:`.figures` and :mod:`.report` (which never import
:mod:`.run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.profile import ModelProfile
from ...planning.noise_model import Calibration
from ...simulation.requests import RequestDistribution


@dataclass(frozen=True)
class Size:
    """Sizes of a run: full (committed results) or quick (CI)."""

    calib_samples: int
    cnn_calib_samples: int
    cnn_epochs: int
    digits_epochs: int
    requests: int
    ae_steps: int


@dataclass(frozen=True)
class ReproductionResults:
    """Everything the figures and ``RESULTS.md`` show, from one reproduction run.

    ``rows`` / ``per_point`` are the per-(scheme, partition point) rows at the 1 % budget
    (Table II request) and averaged over the random requests; ``by`` indexes ``rows`` by
    ``(scheme, p)``. ``targets`` is the dict written as ``results.json``. ``device_classes``:
    per built-in workload and reference device class, QPART's partition point per budget.
    """

    command: str
    quick: bool
    size: Size
    elapsed_s: float
    profile: ModelProfile
    calibration: Calibration
    float_accuracy: float
    rows: list[dict]
    by: dict[tuple[str, int], dict]
    points: tuple[int, ...]
    equal: list[dict]
    fig6: list[dict]
    summary: dict
    summary_held: dict
    per_point: list[dict]
    cnn_rows: list[dict]
    targets: dict
    data_path: Path
    distribution: RequestDistribution
    held_memory_bytes: tuple[int, int]
    device_classes: list[dict] = ()  # type: ignore[assignment]
