"""Re-runs a profiled float graph on fixed inputs with some layer weights replaced and/or the
cut activation transformed, and measures the output-noise energy and the disagreement rate
(:class:`qpart.core.metrics.Agreement`, top-1 by default) against the float model.
Calibration, the measured refinement and the held-out acceptance all measure through it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import fx

import qpart_kernels

from ..core.metrics import AgreementSpec, agreement
from ..core.profile import ModelProfile
from ..core.split import roundtrip_activation


class Probe:
    """Runs the float graph on the calibration inputs with some weights replaced and/or the
    cut activation transformed. Float values of every node are cached once, so a
    perturbation at node ``k`` only re-runs the graph from ``k`` on. ``agreement``: what
    counts as the same answer (:func:`qpart.core.metrics.agreement`; default top-1)."""

    def __init__(self, prof: ModelProfile, x: torch.Tensor, agreement_spec: AgreementSpec = None):
        if x.shape[0] == 0:
            raise ValueError("Probe: no inputs")
        self.prof = prof
        self.agreement = agreement(agreement_spec)
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
        self.n = int(x.shape[0])

    def run(
        self,
        start: int,
        weights: dict[str, torch.Tensor] | None = None,
        cut: tuple[int, object, tuple] | None = None,
    ) -> torch.Tensor:
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
        """``(output-noise energy E||z - z_float||^2, disagreement rate)`` of ``logits``."""
        diff = (logits - self.ref).reshape(self.n, -1)
        energy = float((diff**2).sum(-1).mean())
        return energy, self.agreement.disagreement_rate(logits, self.ref)

    def with_weight(self, name: str, new_weight: torch.Tensor) -> tuple[float, float]:
        """Stats with layer ``name``'s weight replaced by ``new_weight``."""
        return self.stats(self.run(self.layer_index[name], {name: new_weight}))

    def with_activation(self, p: int, fn, *args) -> tuple[float, float]:
        """Stats with the cut activation of point ``p`` replaced by ``fn(value, *args)``."""
        start = self.index[self.prof.cuts[p].node]
        return self.stats(self.run(start, None, (p, fn, args)))

    def with_plan(
        self,
        p: int,
        bits: Sequence[int],
        b_a: int | None,
        weight: Callable[[str, int], torch.Tensor] | None = None,
    ) -> tuple[float, float]:
        """Stats of a plan: device layers ``1..p`` at ``bits`` (real quantizer, dequantized)
        and the cut activation at ``b_a`` (``None`` or ``p = L``: float). ``weight(name,
        bits)`` supplies the dequantized weights (default: quantized afresh); a plan that
        changes nothing measures ``(0, 0)``."""
        return self.stats(self.plan_outputs(p, bits, b_a, weight))

    def plan_outputs(
        self,
        p: int,
        bits: Sequence[int],
        b_a: int | None,
        weight: Callable[[str, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The outputs of a plan on the probe's inputs (see :meth:`with_plan`); the float
        outputs when the plan changes nothing."""
        if weight is None:

            def weight(name: str, b: int) -> torch.Tensor:
                return quantized_weight(self.modules[name].weight, b)

        weights = {
            layer.name: weight(layer.name, int(b)) for layer, b in zip(self.prof.layers[:p], bits)
        }
        starts = [self.layer_index[n] for n in weights]
        cut = None
        if b_a is not None and p < self.prof.num_layers:
            cut = (p, roundtrip_activation, (b_a,))
            starts.append(self.index[self.prof.cuts[p].node])
        if not starts:
            return self.ref
        return self.run(min(starts), weights, cut)


class _swapped:  # noqa: N801 - used as a context manager
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


def quantized_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` (rows = output channels) quantized per channel to ``bits`` with the kernels'
    weight quantizer and dequantized again, as a float ``(rows, K)`` matrix."""
    w2 = w.detach().reshape(w.shape[0], -1).float().contiguous()
    q = qpart_kernels.quantize_weight(w2, bits)
    return qpart_kernels.dequantize_weight(q.packed, q.scales, q.zeros, bits, w2.shape[1])
