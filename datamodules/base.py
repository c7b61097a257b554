"""What every task provides: a finite training set, a held-out test set, and which steps carry loss.

A trial set is three tensors: x (n, T, N_in) float, y (n, T) long for classification or (n, T, N_out) float
for regression, mask (n, T) float with 1 where a step carries loss.

Training batches come from `StepBatchSampler`: batch k of the run is a pure function of (seed, k), so a run
resumed at step k sees exactly the batches an uninterrupted run would, and under DDP each rank takes its
own slice of the same global batch (so N ranks x B/N equals one process with B).
"""
from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass
class TrialSet:
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index], self.mask[index]

    def to(self, device) -> "TrialSet":
        return TrialSet(self.x.to(device), self.y.to(device), self.mask.to(device))


class TrialDataset(Dataset):
    """Map-style view of a TrialSet that fetches a whole batch of indices in one indexing op."""

    def __init__(self, trials: TrialSet):
        self.trials = trials

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, i):
        return self.trials.batch(i)

    def __getitems__(self, indices):
        return self.trials.batch(torch.as_tensor(indices))


def keep_batch(batch):
    """Collate for __getitems__: the batch is already stacked."""
    return batch


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index lists of steps start..total-1; step k uses pass k // per_pass over a permutation
    seeded by (seed, pass). `start` is read when iteration begins (after a checkpoint is restored)."""

    def __init__(self, n: int, batch_size: int, total_steps: int, seed: int, start=lambda: 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size > n:
            raise ValueError(f"batch size {batch_size} exceeds the training set size {n}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of devices {world_size}")
        self.n, self.batch_size, self.total_steps, self.seed = n, batch_size, total_steps, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.per_pass = n // batch_size  # drop the incomplete last batch of a pass
        self._pass, self._order = None, None

    def __len__(self) -> int:
        return self.total_steps

    def permutation(self, pass_index: int) -> torch.Tensor:
        """The seeded order of pass `pass_index`; kept while a pass lasts (not redrawn every step)."""
        if self._pass != pass_index:
            g = torch.Generator().manual_seed(self.seed * 100_003 + pass_index)
            self._pass, self._order = pass_index, torch.randperm(self.n, generator=g)
        return self._order

    def global_batch(self, step: int) -> torch.Tensor:
        pass_index, k = divmod(step, self.per_pass)
        return self.permutation(pass_index)[k * self.batch_size:(k + 1) * self.batch_size]

    def __iter__(self):
        for step in range(int(self.start()), self.total_steps):
            yield self.global_batch(step)[self.rank::self.world_size].tolist()


class TrialDataModule(pl.LightningDataModule):
    """Base DataModule. Subclasses set input_size, output_size, loss ('ce' | 'mse'), has_accuracy and
    implement make_sets() -> (train TrialSet, test TrialSet). A task may also offer a *shifted* test set
    (make_shift_set: other noise or timing than training): an extra, separately named metric (shift/*),
    never the headline gap, which compares the training set with fresh draws of the same distribution."""

    input_size: int
    output_size: int
    loss: str
    has_accuracy: bool = True

    def __init__(self, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.train_set: TrialSet | None = None
        self.test_set: TrialSet | None = None
        self.shift_set: TrialSet | None = None

    def make_shift_set(self) -> TrialSet | None:
        return None

    def make_sets(self) -> tuple[TrialSet, TrialSet]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.test_set = self.make_sets()
            self.shift_set = self.make_shift_set()

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        total = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else None
        if total is None:
            raise ValueError("trainer.max_steps must be a positive number of training steps")
        sampler = StepBatchSampler(len(self.train_set), self.batch_size, total, self.seed,
                                   start=lambda: trainer.global_step,
                                   rank=trainer.global_rank, world_size=trainer.world_size)
        return DataLoader(TrialDataset(self.train_set), batch_sampler=sampler, collate_fn=keep_batch)

    def curvature_batch(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A fixed subset of the training set (drawn once, seeded) for curvature measurements."""
        size = min(size, len(self.train_set))
        g = torch.Generator().manual_seed(seed + 7)
        return self.train_set.batch(torch.randperm(len(self.train_set), generator=g)[:size])
