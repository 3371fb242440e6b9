"""The device runtime (``qpart device``): :class:`DeviceClient` asks the server for a plan,
fetches and caches the quantized segment (verifying its sha256), rebuilds it on
``qpart_kernels`` modules, runs its input, packs the cut activation at the planned width,
sends it and returns the server's output - with bytes and times measured at every step.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch
from torch import fx

from qpart_kernels import fuse_epilogues

from ..core.costs import ChannelState, DeviceProfile, ObjectiveWeights
from .wire import (
    ACTIVATION_HEADER_BYTES,
    DecodedSegment,
    WireFormatError,
    decode_segment,
    encode_activation,
)


class ServerError(RuntimeError):
    """The server answered with an error status; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ServerUnreachable(ConnectionError):
    """No answer from the server after every try (connection refused or reset, timeout)."""


#: Statuses a retry can cure: request body timeout, server busy (with ``Retry-After``), and
#: the answers of a proxy whose replica died mid-request (500 / 502 / 504; every v1 call is
#: idempotent, so a retry is safe - a persistent 500 still ends in ``ServerError``).
RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})
#: Longest ``Retry-After`` the client honours (seconds); longer ones are capped.
MAX_RETRY_AFTER_S = 10.0


@dataclass
class DeviceResult:
    """One inference through the served system, with measured and predicted terms.

    Bytes: ``segment_bytes`` received (0 when the segment was cached), ``activation_bytes``
    sent (0 at ``p = L``); times in seconds (``plan_s``/``segment_s``/``infer_s`` are round
    trips, ``device_s`` the local segment run, ``quantize_s`` packing the activation,
    ``server_s`` what the server reports for its half, ``total_s`` everything)."""

    output: torch.Tensor
    predictions: list[int]
    plan: dict
    segment_cached: bool
    segment_bytes: int
    segment_tensor_bytes: int
    activation_bytes: int
    plan_s: float
    segment_s: float
    device_s: float
    quantize_s: float
    infer_s: float
    server_s: float
    total_s: float

    @property
    def predicted_activation_bytes(self) -> int:
        """``batch * D_a`` (the activation body is this plus the 32-byte header)."""
        return self.output.shape[0] * int(self.plan["activation_payload_bytes"])


@dataclass
class DeviceClient:
    """HTTP client of one device. ``profile``/``channel``/``weights``/``memory_bytes``
    describe it in plan requests; segments are cached in memory (and in ``cache_dir`` when
    given) by their sha256, which is verified on every fetch and load; a bad cache entry (a
    corrupt or unreadable file, a directory, a symlink) is removed and fetched again.

    Every call of the v1 API is idempotent (plans and inferences are pure functions of the
    request), so each is tried up to ``retries`` times: after a transport error (refused,
    reset, timed out) or an answer in ``RETRY_STATUSES``, with exponential backoff from
    ``backoff_s`` (a 503's ``Retry-After`` when longer, capped at 10 s). After the last try
    a transport error raises :class:`ServerUnreachable`, an error status
    :class:`ServerError`."""

    base_url: str
    profile: DeviceProfile = DeviceProfile()
    channel: ChannelState = ChannelState()
    weights: ObjectiveWeights = ObjectiveWeights()
    memory_bytes: float | None = None
    token: str | None = None
    cache_dir: str | None = None
    timeout_s: float = 30.0
    segments: dict[str, DecodedSegment] = field(default_factory=dict)
    held_segment: str | None = None
    retries: int = 4
    backoff_s: float = 0.25
    transport: httpx.BaseTransport | None = None

    def __post_init__(self) -> None:
        if self.retries < 1:
            raise ValueError(f"retries must be >= 1, got {self.retries}")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout_s,
            headers=headers,
            transport=self.transport,
        )

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One idempotent call with retries (see the class doc); returns a < 400 answer."""
        for attempt in range(1, self.retries + 1):
            delay = self.backoff_s * 2 ** (attempt - 1)
            try:
                resp = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ServerUnreachable(
                        f"cannot reach {self.base_url} ({method} {path}) after "
                        f"{self.retries} tries: {exc or type(exc).__name__}"
                    ) from exc
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return self._check(resp)
                try:
                    delay = max(delay, float(resp.headers.get("retry-after", 0)))
                except ValueError:
                    pass
            time.sleep(min(delay, MAX_RETRY_AFTER_S))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _check(resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ServerError(resp.status_code, str(detail))
        return resp

    def models(self) -> list[dict]:
        """``GET /v1/models``: the served models with their shapes, layers and cut points."""
        return self._check(self.http.get("/v1/models")).json()

    def plan_request(self, model: str, accuracy_budget: float) -> dict:
        """The JSON body of ``POST /v1/plan`` for this device."""
        p, c, w = self.profile, self.channel, self.weights
        return {
            "model": model,
            "accuracy_budget": accuracy_budget,
            "device": {
                "cycles_per_mac": p.cycles_per_mac,
                "clock_hz": p.clock_hz,
                "kappa_j_per_cycle_hz2": p.kappa_j_per_cycle_hz2,
                "tx_power_w": p.tx_power_w,
                "rx_power_w": p.rx_power_w,
            },
            "channel": {"uplink_bps": c.uplink_bps, "downlink_bps": c.downlink_bps},
            "weights": {"time": w.time, "energy": w.energy, "cost": w.cost},
            "memory_bytes": self.memory_bytes
            if self.memory_bytes is not None and math.isfinite(self.memory_bytes)
            else None,
            "held_segment": self.held_segment,
        }

    def plan(self, model: str, accuracy_budget: float) -> dict:
        """``POST /v1/plan``; returns the plan JSON."""
        return self._request(
            "POST", "/v1/plan", json=self.plan_request(model, accuracy_budget)
        ).json()

    def _disk_path(self, segment_id: str) -> Path | None:
        return Path(self.cache_dir) / f"{segment_id}.safetensors" if self.cache_dir else None

    def segment(self, plan: dict) -> tuple[DecodedSegment, int]:
        """The plan's segment: from the cache if held (0 bytes), else fetched, verified
        and cached. Returns ``(segment, bytes received)``."""
        sid = plan["segment_id"]
        if sid in self.segments:
            self.held_segment = sid
            return self.segments[sid], 0
        path = self._disk_path(sid)
        if path is not None:
            seg = self._load_cached(path, sid)
            if seg is not None:
                self.segments[sid] = seg
                self.held_segment = sid
                return seg, 0
        resp = self._request("GET", f"/v1/segment/{plan['plan_id']}")
        seg = runnable_segment(decode_segment(resp.content, sid))  # verifies the sha256
        self.segments[sid] = seg
        self.held_segment = sid
        if path is not None:
            _store(path, resp.content)
        return seg, len(resp.content)

    @staticmethod
    def _load_cached(path: Path, sid: str) -> DecodedSegment | None:
        """The cached segment at ``path``, or None after removing a bad entry (anything but
        a regular file holding a segment with this sha256: a directory, a symlink, an
        unreadable or corrupt file)."""
        if not (path.exists() or path.is_symlink()):
            return None
        if path.is_file() and not path.is_symlink():
            try:
                return runnable_segment(decode_segment(path.read_bytes(), sid))
            except (OSError, WireFormatError):
                pass
        _remove(path)
        return None

    def run(self, x: torch.Tensor, model: str, accuracy_budget: float) -> DeviceResult:
        """The whole flow for a batch ``x``: plan, segment, local run, pack, infer."""
        t0 = time.perf_counter()
        plan = self.plan(model, accuracy_budget)
        t1 = time.perf_counter()
        seg, seg_bytes = self.segment(plan)
        t2 = time.perf_counter()
        return self.infer(plan, seg, x, seg_bytes, t1 - t0, t2 - t1, t0)

    def infer(
        self,
        plan: dict,
        seg: DecodedSegment,
        x: torch.Tensor,
        seg_bytes: int = 0,
        plan_s: float = 0.0,
        segment_s: float = 0.0,
        t0: float | None = None,
    ) -> DeviceResult:
        """Runs ``seg`` on ``x``, sends the packed cut activation for ``plan`` (unless
        ``p = L``) and returns the output with measurements."""
        t0 = time.perf_counter() if t0 is None else t0
        t2 = time.perf_counter()
        with torch.no_grad():
            cut = seg.module(x)
        t3 = time.perf_counter()
        act_bytes, quant_s, infer_s, server_s = 0, 0.0, 0.0, 0.0
        if plan["activation_bits"] is None:
            out = cut.reshape(cut.shape[0], -1)
        else:
            body = encode_activation(cut, int(plan["activation_bits"]), plan["plan_id"])
            t4 = time.perf_counter()
            quant_s = t4 - t3
            resp = self._request(
                "POST",
                f"/v1/infer/{plan['plan_id']}",
                content=body,
                headers={"Content-Type": "application/octet-stream"},
            )
            infer_s = time.perf_counter() - t4
            data = resp.json()
            server_s = float(data["server_time_s"])
            act_bytes = len(body)
            out = torch.tensor(data["output"], dtype=torch.float32)
        total = time.perf_counter() - t0
        return DeviceResult(
            out,
            out.argmax(-1).tolist(),
            plan,
            seg_bytes == 0,
            seg_bytes,
            int(plan["weight_payload_bytes"]),
            act_bytes,
            plan_s,
            segment_s,
            t3 - t2,
            quant_s,
            infer_s,
            server_s,
            total,
        )


def _remove(path: Path) -> None:
    """Removes a cache entry whatever it is (file, symlink, directory tree); best effort."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _store(path: Path, data: bytes) -> None:
    """Writes a cache entry atomically (temporary file, then rename over whatever is there);
    a cache that cannot be written only costs a later fetch."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            _remove(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass


def activation_overhead_bytes() -> int:
    """Bytes of the infer body beyond ``batch * D_a``: the fixed header."""
    return ACTIVATION_HEADER_BYTES


def runnable_segment(seg: DecodedSegment) -> DecodedSegment:
    """``seg`` with its graph's conv epilogues fused and its max pools on the native kernel
    (``qpart_kernels.fuse_epilogues``): the same values, fewer passes over memory."""
    if isinstance(seg.module, fx.GraphModule):
        seg.module = fuse_epilogues(seg.module)
    return seg
