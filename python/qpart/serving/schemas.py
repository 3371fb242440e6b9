"""The HTTP contract of the server: pydantic request/response models and the two
identifiers that appear in URLs and headers. Pure data (pydantic only): the routes build
these from the registry, the device client reads their JSON (docs/SERVING.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SEGMENT_ID_HEADER = "X-QPART-Segment-Id"
PLAN_ID_PATTERN = r"^[0-9a-f]{16}$"

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
#: Request parts are frozen (hence hashable), so pydantic uses their defaults as they are
#: instead of deep-copying them for every request.
_REQUEST = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DeviceSpec(BaseModel):
    """The device's compute and radio profile (docs/PLANNING.md §2; Table II defaults).

    Every numeric field of a request is bounded (here and below) to a physically meaningful
    range, so that no combination can overflow the cost model (a 1e200 Hz clock squared) or
    give a non-finite objective: out-of-range values are a 422, never a 500.
    """

    model_config = _REQUEST
    cycles_per_mac: float = Field(5.0, ge=1e-6, le=1e6, description="device cycles per MAC")
    clock_hz: float = Field(200e6, ge=1.0, le=1e12, description="device clock (Hz)")
    kappa_j_per_cycle_hz2: float = Field(1e-27, ge=0, le=1e-15, description="energy coefficient")
    tx_power_w: float = Field(1.0, ge=0, le=1e4, description="transmit power (W)")
    rx_power_w: float = Field(0.0, ge=0, le=1e4, description="receive power (W)")


class ChannelSpec(BaseModel):
    """Link capacities in bit/s."""

    model_config = _REQUEST
    uplink_bps: float = Field(200e6, ge=1.0, le=1e15)
    downlink_bps: float = Field(200e6, ge=1.0, le=1e15)


class WeightsSpec(BaseModel):
    """Objective weights ``J = w_t T + w_e E + w_c S``."""

    model_config = _REQUEST
    time: float = Field(1.0, ge=0, le=1e6)
    energy: float = Field(1.0, ge=0, le=1e6)
    cost: float = Field(1.0, ge=0, le=1e6)


class PlanRequest(BaseModel):
    """A device's planning request."""

    model_config = _REQUEST
    model: str = Field(..., min_length=1, max_length=128, description="registered model id")
    accuracy_budget: float = Field(..., gt=0, le=1, description="allowed accuracy loss (fraction)")
    device: DeviceSpec = DeviceSpec()
    channel: ChannelSpec = ChannelSpec()
    weights: WeightsSpec = WeightsSpec()
    memory_bytes: float | None = Field(
        None, ge=1.0, le=1e18, description="device memory; null = unbounded"
    )
    held_segment: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="sha256 of a segment the device holds"
    )
    predicted_only: bool = Field(
        False,
        description="serve by the noise model's predicted level instead of the held-out "
        "upper bound (no measured guarantee)",
    )


class PredictedTerms(BaseModel):
    """The planner's predicted objective terms for this request (s, J, cost units)."""

    device_time_s: float
    server_time_s: float
    tx_time_s: float
    total_time_s: float
    device_energy_j: float
    tx_energy_j: float
    total_energy_j: float
    server_cost: float
    objective: float


class PlanResponse(BaseModel):
    """The plan: partition point, widths, predicted terms, the segment to fetch."""

    plan_id: str
    model: str
    partition_point: int
    num_layers: int
    layer_names: list[str]
    bits: list[int]
    activation_bits: int | None
    accuracy_level: float = Field(description="calibrated level of the chosen pattern")
    predicted_loss: float
    measured_loss: float | None = Field(
        None, description="disagreement rate with the float model on the acceptance split"
    )
    loss_upper_bound: float | None = Field(
        None, description="one-sided Clopper-Pearson upper bound of the true disagreement rate"
    )
    acceptance_n: int | None = Field(None, description="acceptance samples the bound rests on")
    confidence: float | None = Field(None, description="confidence of the upper bound")
    predicted_only: bool = Field(
        False, description="served by the predicted level only (no measured guarantee)"
    )
    weight_payload_bytes: int = Field(description="D_w: tensor bytes of the segment")
    activation_payload_bytes: int = Field(description="D_a per sample (0 when p = L)")
    fp32_weight_bytes: int
    memory_bytes: int
    device_macs: int
    server_macs: int
    input_shape: list[int]
    cut_shape: list[int] | None
    output_shape: list[int]
    segment_id: str
    segment_bytes: int = Field(description="container size (D_w + safetensors header)")
    segment_held: bool = Field(description="the device already holds this segment")
    predicted: PredictedTerms


class InferResponse(BaseModel):
    """Result of the server half."""

    plan_id: str
    batch: int
    output: list[list[float]]
    predictions: list[int]
    bytes_received: int
    server_time_s: float


class LayerInfo(BaseModel):
    """One learnable layer of a served model (in execution order)."""

    name: str
    kind: str
    weights: int
    macs: int
    output_elems: int


class CutInfo(BaseModel):
    """A valid partition point ``p < L`` and the per-sample shape of what crosses there."""

    p: int
    shape: list[int]
    elems: int


class ModelInfo(BaseModel):
    id: str
    description: str
    num_layers: int
    valid_points: list[int]
    accuracy_levels: list[float]
    patterns: int
    segments: int
    input_shape: list[int]
    output_shape: list[int]
    fp32_weight_bytes: int
    layers: list[LayerInfo]
    cuts: list[CutInfo]


class Health(BaseModel):
    status: str
    version: str
    models: list[str]


class ErrorBody(BaseModel):
    detail: str
