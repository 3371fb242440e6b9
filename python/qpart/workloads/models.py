"""The workloads' networks: the paper's six-layer MNIST classifier (with a cached, trained
instance), two small CNNs for the Table IV analogue, and a small deterministic trainer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .data import N_CLASSES, N_FEATURES, holdout_split, load_mnist, random_shift

#: Widths of the fully-connected layers: 784 -> 512 -> 256 -> 128 -> 64 -> 32 -> 10.
MLP_WIDTHS = (N_FEATURES, 512, 256, 128, 64, 32, N_CLASSES)

#: Training recipe of :func:`trained_mnist_mlp`. Bump ``CACHE_VERSION`` whenever the recipe,
#: the data split or the architecture changes, so stale cached weights are not reused.
#: (40 epochs of 4000 digits with random shifts: ~5 s on 2 CPU cores, ~97% test accuracy.)
TRAIN_EPOCHS = 40
TRAIN_BATCH_SIZE = 128
TRAIN_LR = 2e-3
CACHE_VERSION = 1

#: ``augment(x_batch, generator) -> x_batch``: a seeded per-batch input transformation.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def mnist_mlp() -> nn.Sequential:
    """The six-layer fully-connected MNIST classifier (ReLU between layers, logits out).

    Layers are ``nn.Sequential`` children ``"0", "2", ..., "10"`` (the Linear layers) with
    ReLUs at the odd indices; input is a flattened ``(batch, 784)`` image.
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int = TRAIN_EPOCHS,
    batch_size: int = TRAIN_BATCH_SIZE,
    lr: float = TRAIN_LR,
    seed: int = 0,
    progress: bool = True,
    augment: Augment | None = None,
) -> nn.Module:
    """Trains ``model`` in place with Adam and cross-entropy; returns it in eval mode.

    ``lr`` is the peak of a one-cycle schedule (warm-up, then cosine decay) over all steps.
    Mini-batches are reshuffled every epoch, and ``augment`` (if given) is applied to each
    batch, drawing from a ``torch.Generator`` seeded with ``seed`` (``torch.manual_seed(seed)``
    is set too), so a given seed, initialisation and data give the same weights on the same
    machine. ``progress`` shows a tqdm bar over epochs with the mean training loss.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"train_classifier: epochs, batch_size and lr must be positive, got "
            f"{epochs}, {batch_size}, {lr}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"train_classifier: {x.shape[0]} inputs but {y.shape[0]} labels")
    from tqdm.auto import trange

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    bar = trange(epochs, desc="training", unit="epoch", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            inputs = x[batch] if augment is None else augment(x[batch], generator)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * batch.numel()
        bar.set_postfix(loss=f"{total / n:.4f}")
    return model.eval()


def default_cache_dir() -> Path:
    """Where trained weights are cached: ``$QPART_CACHE`` if set, else ``~/.cache/qpart``."""
    env = os.environ.get("QPART_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qpart"


def cached_model_path(
    cache_dir: str | os.PathLike[str] | None = None, seed: int = 0, holdout: int = 0
) -> Path:
    """File that :func:`trained_mnist_mlp` reads and writes for ``seed`` (may not exist yet);
    ``holdout > 0`` names the variant trained without that many held-out digits."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    suffix = f"_holdout{holdout}" if holdout else ""
    return root / f"mnist_mlp_v{CACHE_VERSION}_seed{seed}{suffix}.pt"


def trained_mnist_mlp(
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    holdout: int = 0,
) -> nn.Sequential:
    """The MNIST MLP trained on ``load_mnist(seed)``'s training split (random-shift
    augmentation, the ``TRAIN_*`` recipe above); returned in eval mode.

    ``holdout > 0``: trained without the ``holdout`` digits that
    :func:`qpart.workloads.data.holdout_split` (same seed) sets aside for calibration (own
    cache file).

    Weights are cached as ``mnist_mlp_v{version}_seed{seed}.pt`` in ``cache_dir`` (default:
    :func:`default_cache_dir`) and loaded from there when present; otherwise the network is
    trained (a few seconds on a laptop CPU) and the file is written atomically.
    """
    path = cached_model_path(cache_dir, seed, holdout)
    torch.manual_seed(seed)
    model = mnist_mlp()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    data = load_mnist(seed=seed)
    if holdout:
        data = holdout_split(data, holdout, seed)[0]
    train_classifier(
        model, data.x_train, data.y_train, seed=seed, progress=progress, augment=random_shift
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model


#: Training digits held out of the MLP's training: calibration and acceptance data.
HOLDOUT = 1000


def mnist_mlp_holdout(
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    holdout: int = HOLDOUT,
):
    """The six-layer MLP trained without ``holdout`` stratified training digits, with the
    data: ``(model, split, x_holdout, y_holdout)``. ``split`` is the full
    :func:`load_mnist` split (its test digits are used for evaluation only); the
    held-out digits calibrate the noise model and are the acceptance data of every scheme."""
    data = load_mnist(seed=seed)
    _, x_hold, y_hold = holdout_split(data, holdout, seed)
    model = trained_mnist_mlp(cache_dir=cache_dir, seed=seed, progress=progress, holdout=holdout)
    return model, data, x_hold, y_hold


def mnist_cnn() -> nn.Sequential:
    """Small CNN for 28x28 digits: conv8-pool-conv16-pool-fc64-fc10."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def digits8_cnn() -> nn.Sequential:
    """Small CNN for sklearn's 8x8 digits: conv16-conv32-pool-fc64-fc10."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BatchNorm, ReLU, and a residual add (through a
    strided 1x1 conv + BatchNorm when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResidualCNN(nn.Module):
    """A small ResNet for 28x28 digits: strided stem conv + BatchNorm, three basic blocks
    (8 -> 16 -> 32 channels, the last two strided with 1x1 downsample paths), global average
    pooling and a linear classifier (10 learnable layers)."""

    def __init__(self, channels: tuple[int, int, int] = (8, 16, 32), classes: int = N_CLASSES):
        super().__init__()
        c1, c2, c3 = channels
        self.stem = nn.Conv2d(1, c1, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c1)
        self.layer1 = BasicBlock(c1, c1)
        self.layer2 = BasicBlock(c1, c2, stride=2)
        self.layer3 = BasicBlock(c2, c3, stride=2)
        self.fc = nn.Linear(c3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def mnist_resnet() -> ResidualCNN:
    """The residual CNN workload for 28x28 digits (:class:`ResidualCNN`)."""
    return ResidualCNN()
