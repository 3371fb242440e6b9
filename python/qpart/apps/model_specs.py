"""What ``qpart serve --model`` / ``--config`` name, turned into :class:`ModelSpec`s.

A model argument is ``ID=SPEC`` or a built-in id alone (``mnist-mlp``, ``mnist-cnn``,
``mnist-resnet``). SPEC is one of:

* a built-in id;
* ``package.module:factory`` - a function (no arguments) returning a :class:`ModelSpec`, or
  a tuple ``(model, example_input, calibration_inputs[, description])``; the current
  directory is importable;
* ``PROGRAM.pt2:CALIBRATION`` - a ``torch.export`` program saved with
  ``torch.export.save`` and a calibration-input file (``.npy``, or ``.safetensors`` with
  one tensor or a tensor named ``inputs``).

A TOML config lists models as tables: ``[models.ID]`` with ``builtin = "mnist-cnn"``, or
``factory = "pkg.mod:make"``, or ``program = "net.pt2"`` + ``calibration = "x.npy"``, an
optional ``description`` and an optional ``int8_activations = true`` (the device runs the
model's quantized layers on int8 activations; ``qpart serve --int8-activations`` sets it
for every model).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..serving.registry import ModelSpec
from ..workloads.zoo import builtin_ids, builtin_model

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SpecError(ValueError):
    """A model argument or config entry that cannot be loaded (the message says why)."""


@dataclass(frozen=True)
class ModelSource:
    """One model to serve: its id and where it comes from (exactly one of the fields)."""

    model_id: str
    builtin: str | None = None
    factory: str | None = None
    program: str | None = None
    calibration: str | None = None
    description: str = ""
    int8_activations: bool | None = None


def _check_id(model_id: str) -> str:
    if not _ID.match(model_id):
        raise SpecError(
            f"model id {model_id!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return model_id


def parse_model_arg(text: str) -> ModelSource:
    """Parses one ``--model`` argument (``ID=SPEC`` or a built-in id)."""
    model_id, sep, spec = text.partition("=")
    if not sep:
        model_id, spec = text, text
    _check_id(model_id)
    if spec in builtin_ids():
        return ModelSource(model_id, builtin=spec)
    head, colon, tail = spec.partition(":")
    if colon and head.endswith(".pt2"):
        return ModelSource(model_id, program=head, calibration=tail)
    if colon and head and tail:
        return ModelSource(model_id, factory=spec)
    raise SpecError(
        f"--model {text!r}: SPEC must be a built-in id ({', '.join(builtin_ids())}), "
        "'package.module:factory' or 'PROGRAM.pt2:CALIBRATION'"
    )


def parse_config(path: str | os.PathLike[str]) -> list[ModelSource]:
    """The models of a TOML config file (see the module docstring)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"config {path}: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise SpecError(f"config {path}: needs at least one [models.ID] table")
    sources = []
    for model_id, entry in models.items():
        _check_id(model_id)
        if not isinstance(entry, dict):
            raise SpecError(f"config {path}: [models.{model_id}] must be a table")
        keys = set(entry) - {"description", "int8_activations"}
        allowed = ({"builtin"}, {"factory"}, {"program", "calibration"})
        if keys not in allowed:
            raise SpecError(
                f"config {path}: [models.{model_id}] needs exactly one of builtin, factory, "
                f"or program + calibration (got {sorted(keys)})"
            )
        rel = {
            k: str((path.parent / v).resolve()) if k in ("program", "calibration") else v
            for k, v in entry.items()
            if k not in ("description", "int8_activations")
        }
        if rel.get("builtin") is not None and rel["builtin"] not in builtin_ids():
            raise SpecError(f"config {path}: unknown built-in model {rel['builtin']!r}")
        int8 = entry.get("int8_activations")
        if int8 is not None and not isinstance(int8, bool):
            raise SpecError(
                f"config {path}: [models.{model_id}] int8_activations must be true or false"
            )
        sources.append(
            ModelSource(
                model_id,
                description=str(entry.get("description", "")),
                int8_activations=int8,
                **rel,
            )
        )
    return sources


def load_inputs(path: str | os.PathLike[str]) -> torch.Tensor:
    """A float32 input batch from ``.npy`` (no pickle) or ``.safetensors`` (one tensor, or
    the tensor named ``inputs``)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            import numpy as np

            x = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if "inputs" in tensors:
                x = tensors["inputs"]
            elif len(tensors) == 1:
                x = next(iter(tensors.values()))
            else:
                raise SpecError(f"{path}: {len(tensors)} tensors; name the inputs tensor 'inputs'")
        else:
            raise SpecError(f"{path}: inputs must be a .npy or .safetensors file")
    except SpecError:
        raise
    except Exception as exc:  # numpy / safetensors raise several types for bad files
        raise SpecError(f"cannot read inputs from {path}: {exc}") from exc
    if x.dim() < 2:
        raise SpecError(f"{path}: inputs must be batched (batch first), got {tuple(x.shape)}")
    return x.to(torch.float32).contiguous()


def _call_factory(target: str) -> ModelSpec:
    module_name, _, attr = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot load factory {target!r}: {exc}") from exc
    result = factory()
    if isinstance(result, ModelSpec):
        return result
    if isinstance(result, tuple) and len(result) in (3, 4):
        try:
            return ModelSpec(*result)
        except ValueError as exc:
            raise SpecError(f"factory {target!r}: {exc}") from exc
    raise SpecError(
        f"factory {target!r} returned {type(result).__name__}; expected a qpart.ModelSpec or "
        "(model, example_input, calibration_inputs[, description])"
    )


def load_spec(
    source: ModelSource,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    calibration_samples: int | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of ``source`` (trains / loads a built-in model; imports a
    factory; loads an exported program and its calibration inputs)."""
    if source.builtin is not None:
        kwargs = {} if calibration_samples is None else {"calibration_samples": calibration_samples}
        b = builtin_model(source.builtin, cache_dir, seed, progress, **kwargs)
        # calibrated on held-out training digits, accepted on the test digits (never trained,
        # calibrated or selected on)
        return ModelSpec(
            b.model,
            b.example,
            b.calibration,
            source.description or b.description,
            b.x_test,
            bool(source.int8_activations),
        )
    if source.factory is not None:
        spec = _call_factory(source.factory)
    else:
        try:
            program = torch.export.load(source.program)
        except Exception as exc:  # torch.export.load raises several types
            raise SpecError(f"cannot load exported program {source.program!r}: {exc}") from exc
        calib = load_inputs(source.calibration)
        spec = ModelSpec(program, calib[:2], calib, f"exported program {source.program}")
    if source.description:
        spec.description = source.description
    if source.int8_activations is not None:
        spec.int8_activations = source.int8_activations
    if calibration_samples is not None:
        spec.calibration = spec.calibration[:calibration_samples]
    return spec
