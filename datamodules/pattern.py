"""Pattern generation: from a frozen random input, produce a sum of sinusoids; MSE over every time step.

    y(t) = sum_k a_k sin(2 pi t / P_k + phi_k),   P = (1000, 500, 333, 200) ms,
           a_k ~ U[amplitude_range], phi_k ~ U[0, 2 pi)  (drawn once per seed)
    then centred (zero mean over the trial) and scaled to max |y| = 1;  N_out = 1.

The input is `n_inputs` channels of a fixed N(0, 1) pattern (one value per channel and step, drawn once
per seed, identical on every trial): the network's clock. A trial is that pattern plus i.i.d. Gaussian
input noise. The training set is `train_size` noise realisations of std `noise` (fixed, seeded); the test
set is `test_size` fresh realisations (another random stream) of the same std (`test_noise` defaults to
`noise`), so gap/loss = test MSE - train MSE measures how the learned solution copes with inputs it never
saw from the distribution it trained on. A shifted test set of std `shift_noise` gives the shift/* metrics.
No accuracy: the generalization callback reports MSE and normalised MSE (MSE / variance of the target).
Coarse steps (dt = 20 ms over 1000 ms: T = 50) so that a CPU run takes minutes.
"""
from __future__ import annotations

import math

import torch

from datamodules.base import TrialDataModule, TrialSet


def sum_of_sines(t: torch.Tensor, periods: list[float], amplitudes: torch.Tensor, phases: torch.Tensor
                 ) -> torch.Tensor:
    """sum_k a_k sin(2 pi t / P_k + phi_k) at times t (T,), centred and scaled to max |y| = 1: shape (T,)."""
    period = torch.tensor(periods, dtype=torch.float64)
    y = (amplitudes.double()[:, None]
         * torch.sin(2 * math.pi * t.double()[None, :] / period[:, None] + phases.double()[:, None])).sum(0)
    y = y - y.mean()
    return (y / y.abs().max()).float()


class PatternDataModule(TrialDataModule):
    loss = "mse"
    output_size = 1
    has_accuracy = False

    def __init__(self, dt: float = 20.0, duration: float = 1000.0,
                 periods: list[float] = (1000.0, 500.0, 333.0, 200.0), amplitude_range: list[float] = (0.5, 2.0),
                 n_inputs: int = 10, train_size: int = 64, test_size: int = 512, noise: float = 0.2,
                 test_noise: float | None = None, shift_noise: float | None = None, batch_size: int = 64,
                 seed: int = 0, **_ignored):
        super().__init__(batch_size=batch_size, seed=seed)
        self.dt = float(dt)
        self.T = int(round(duration / dt))
        self.periods = [float(p) for p in periods]
        low, high = (float(a) for a in amplitude_range)
        if self.T < 2:
            raise ValueError(f"task.duration / task.dt must give at least 2 steps, got {self.T}")
        if not self.periods or min(self.periods) < 2 * self.dt:
            raise ValueError(f"task.periods={list(periods)} is not allowed; each period must be >= 2 * dt "
                             f"= {2 * self.dt:g} ms (Nyquist)")
        if not 0 < low <= high:
            raise ValueError(f"task.amplitude_range={list(amplitude_range)} is not allowed; need 0 < low <= high")
        if int(n_inputs) < 1:
            raise ValueError(f"task.n_inputs must be >= 1, got {n_inputs}")
        self.amplitude_range = (low, high)
        self.input_size = int(n_inputs)
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.noise = float(noise)
        self.test_noise = self.noise if test_noise is None else float(test_noise)
        self.shift_noise = None if shift_noise is None else float(shift_noise)

        # the frozen part of every trial, drawn once per seed: target and input pattern
        g = torch.Generator().manual_seed(3 * self.seed)
        n = len(self.periods)
        self.amplitudes = low + (high - low) * torch.rand(n, generator=g)
        self.phases = 2 * math.pi * torch.rand(n, generator=g)
        self.times = self.dt * torch.arange(self.T)                                   # ms, (T,)
        self.target = sum_of_sines(self.times, self.periods, self.amplitudes, self.phases)   # (T,)
        self.pattern = torch.randn(self.T, self.input_size, generator=g)              # (T, n_inputs)

    def draw(self, n: int, noise: float, generator: torch.Generator) -> TrialSet:
        """n trials: x (n, T, n_inputs) = pattern + noise * N(0, 1), y (n, T, 1) the target, mask all ones."""
        x = self.pattern + noise * torch.randn(n, self.T, self.input_size, generator=generator)
        y = self.target[None, :, None].expand(n, self.T, 1).contiguous()
        return TrialSet(x, y, torch.ones(n, self.T))

    def make_sets(self) -> tuple[TrialSet, TrialSet]:
        # separate streams: test noise is fresh, never a re-draw of a training realisation
        train = self.draw(self.train_size, self.noise, torch.Generator().manual_seed(3 * self.seed + 1))
        test = self.draw(self.test_size, self.test_noise, torch.Generator().manual_seed(3 * self.seed + 2))
        return train, test

    def make_shift_set(self) -> TrialSet | None:
        if self.shift_noise is None:
            return None
        return self.draw(self.test_size, self.shift_noise, torch.Generator().manual_seed(3 * self.seed + 100_003))
