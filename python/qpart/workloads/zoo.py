"""The built-in servable models: the MNIST MLP, the MNIST CNN and the residual CNN, each
trained deterministically on real digits (without the held-out calibration digits) and
cached, with the inputs a server needs to register it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .data import holdout_split, load_mnist, random_shift
from .models import (
    HOLDOUT,
    default_cache_dir,
    mnist_cnn,
    mnist_mlp,
    mnist_resnet,
    train_classifier,
    trained_mnist_mlp,
)

#: Bump when a recipe or architecture below changes (stale weights are then not reused).
ZOO_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """How a built-in model is built and trained (``image``: inputs are ``(N, 1, 28, 28)``,
    else flattened ``(N, 784)``)."""

    build: Callable[[], nn.Module]
    description: str
    image: bool
    epochs: int
    lr: float = 2e-3


RECIPES: dict[str, Recipe] = {
    "mnist-mlp": Recipe(mnist_mlp, "six-layer MNIST MLP (784-512-256-128-64-32-10)", False, 40),
    "mnist-cnn": Recipe(mnist_cnn, "MNIST CNN: conv8-pool-conv16-pool-fc64-fc10", True, 10),
    "mnist-resnet": Recipe(
        mnist_resnet,
        "residual MNIST CNN: stem, 3 basic blocks with BatchNorm (8-16-32), GAP, fc",
        True,
        8,
        lr=5e-3,
    ),
}


@dataclass
class BuiltinModel:
    """A trained built-in model with its example, calibration and evaluation inputs."""

    model_id: str
    description: str
    model: nn.Module
    example: torch.Tensor
    calibration: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def builtin_ids() -> tuple[str, ...]:
    """The ids of the built-in models."""
    return tuple(RECIPES)


def _image_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_shift(x.reshape(x.shape[0], -1), generator).reshape(x.shape)


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def builtin_model(
    model_id: str,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    calibration_samples: int = HOLDOUT,
) -> BuiltinModel:
    """The built-in model ``model_id`` (see :data:`RECIPES`), trained on ``load_mnist(seed)``
    without its ``HOLDOUT`` held-out digits (cached as ``{id}_zoo{version}_seed{seed}.pt``),
    with up to ``calibration_samples`` of the held-out digits as calibration inputs and the
    1000 test digits for evaluation."""
    if model_id not in RECIPES:
        raise KeyError(f"unknown built-in model {model_id!r}; built-in: {', '.join(RECIPES)}")
    recipe = RECIPES[model_id]
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    data = load_mnist(seed=seed)
    train, x_hold, _ = holdout_split(data, HOLDOUT, seed)

    def shape(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1, 28, 28) if recipe.image else x

    path = cache / f"{model_id}_zoo{ZOO_VERSION}_seed{seed}.pt"
    if model_id == "mnist-mlp":  # the experiments' held-out MLP (same recipe, same cache)
        model = trained_mnist_mlp(cache, seed, progress, holdout=HOLDOUT)
    else:
        torch.manual_seed(seed)
        model = recipe.build()
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            train_classifier(
                model,
                shape(train.x_train),
                train.y_train,
                epochs=recipe.epochs,
                lr=recipe.lr,
                seed=seed,
                progress=progress,
                augment=_image_shift if recipe.image else random_shift,
            )
            _save_atomic(model.state_dict(), path)
    return BuiltinModel(
        model_id,
        recipe.description,
        model.eval(),
        shape(data.x_test[:2]),
        shape(x_hold[:calibration_samples]),
        shape(data.x_test),
        data.y_test,
    )
