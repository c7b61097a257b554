"""Cued pattern generation: a cue sets the tempo of a sum of sinusoids; held-out cues are the test set.

    y_c(t) = sum_k a_k sin(2 pi s(c) t / P_k + phi_k) / Z,    s(c) = 1 + (speed - 1) c,  c in [0, 1]
    P = (1000, 500, 333, 200) ms,  a_k ~ U[amplitude_range],  phi_k ~ U[0, 2 pi)  (drawn once per seed)
    Z = max |y| over a fine grid of cues and the trial's steps (one constant: max |y| <= 1 for every cue).

A trial's input is `n_inputs` channels of a frozen N(0, 1) pattern (one value per channel and step, drawn
once per seed, the same on every trial: the network's clock) plus one cue channel that holds c for the
whole trial, all with i.i.d. Gaussian input noise of std `noise`. MSE on every step; N_out = 1.

Why this protocol (docs/study/design-pattern.md): one frozen input with one target cannot open a gap (test
trials differed from training only by input noise; every rule's gap was ~0.0006 MSE). Here the network is
trained on `train_cues` evenly spaced cue values (0, 1/(K-1), ..., 1) and tested on the midpoints between
them, which it never saw: it must produce a pattern at a tempo it was never trained on, and a network
that memorised the K trained patterns without a smooth dependence on the cue gets them wrong
(interpolation). gap/loss = test MSE - train MSE. The shifted set (shift/*) is the held-out cues at the
larger input noise `shift_noise`.

Training set: `train_size` trials, the trained cues in turn (balanced), fixed noise realisations (seeded).
Test set: `test_size` trials, the held-out cues in turn, fresh noise (another stream). No accuracy: the
generalization callback reports MSE and normalised MSE (MSE / variance of the target over the set);
predicting the target's mean scores nmse 1. A run *learned* when its test nmse is below 0.5 (defined in
docs/study/plan.yaml, tasks.pattern.learned_margin). Coarse steps (dt = 20 ms over 1000 ms: T = 50).
"""
from __future__ import annotations

import math

import torch

from datamodules.base import TrialDataModule, TrialSet


def sum_of_sines(t: torch.Tensor, periods: list[float], amplitudes: torch.Tensor, phases: torch.Tensor,
                 speed: torch.Tensor) -> torch.Tensor:
    """sum_k a_k sin(2 pi s t / P_k + phi_k) at times t (T,) for each tempo s in `speed` (n,): (n, T), float64."""
    period = torch.tensor(periods, dtype=torch.float64)
    phase = 2 * math.pi * speed.double()[:, None, None] * t.double()[None, :, None] / period + phases.double()
    return (amplitudes.double() * torch.sin(phase)).sum(-1)


def trained_cues(n: int) -> torch.Tensor:
    """The K evenly spaced cue values trained on: 0, 1/(K-1), ..., 1."""
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64)


def held_out_cues(n: int) -> torch.Tensor:
    """The K-1 midpoints between neighbouring trained cues: never trained on."""
    c = trained_cues(n)
    return (c[1:] + c[:-1]) / 2


class PatternDataModule(TrialDataModule):
    loss = "mse"
    output_size = 1
    has_accuracy = False

    def __init__(self, dt: float = 20.0, duration: float = 1000.0,
                 periods: list[float] = (1000.0, 500.0, 333.0, 200.0), amplitude_range: list[float] = (0.5, 2.0),
                 n_inputs: int = 10, train_cues: int = 5, speed: float = 1.5, train_size: int = 64,
                 test_size: int = 512, noise: float = 0.2, test_noise: float | None = None,
                 shift_noise: float | None = None, batch_size: int = 64, seed: int = 0, **_ignored):
        super().__init__(batch_size=batch_size, seed=seed)
        self.dt = float(dt)
        self.T = int(round(duration / dt))
        self.periods = [float(p) for p in periods]
        low, high = (float(a) for a in amplitude_range)
        self.speed = float(speed)
        if self.T < 2:
            raise ValueError(f"task.duration / task.dt must give at least 2 steps, got {self.T}")
        if not math.isfinite(self.speed) or self.speed < 1:
            raise ValueError(f"task.speed={speed!r} is not allowed; it must be a number >= 1 (the fastest tempo)")
        if not self.periods or min(self.periods) / self.speed < 2 * self.dt:
            raise ValueError(f"task.periods={list(periods)} is not allowed at task.speed={self.speed:g}; each "
                             f"period / speed must be >= 2 * dt = {2 * self.dt:g} ms (Nyquist)")
        if not 0 < low <= high:
            raise ValueError(f"task.amplitude_range={list(amplitude_range)} is not allowed; need 0 < low <= high")
        if int(n_inputs) < 1:
            raise ValueError(f"task.n_inputs must be >= 1, got {n_inputs}")
        if int(train_cues) < 2:
            raise ValueError(f"task.train_cues must be >= 2 (held-out cues lie between trained ones), got {train_cues}")
        self.amplitude_range = (low, high)
        self.n_inputs, self.n_cues = int(n_inputs), int(train_cues)
        self.input_size = self.n_inputs + 1  # the clock channels, then the cue
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.noise = float(noise)
        self.test_noise = self.noise if test_noise is None else float(test_noise)
        self.shift_noise = None if shift_noise is None else float(shift_noise)

        # the frozen part of every trial, drawn once per seed: the target's components and the clock
        g = torch.Generator().manual_seed(3 * self.seed)
        n = len(self.periods)
        self.amplitudes = low + (high - low) * torch.rand(n, generator=g)
        self.phases = 2 * math.pi * torch.rand(n, generator=g)
        self.times = self.dt * torch.arange(self.T)                                   # ms, (T,)
        self.pattern = torch.randn(self.T, self.n_inputs, generator=g)                # (T, n_inputs)
        fine = sum_of_sines(self.times, self.periods, self.amplitudes, self.phases, self.tempo(torch.linspace(0, 1, 201)))
        self.scale = float(fine.abs().max())                                         # Z

    def tempo(self, cue: torch.Tensor) -> torch.Tensor:
        """s(c) = 1 + (speed - 1) c."""
        return 1 + (self.speed - 1) * cue.double()

    def target(self, cue: torch.Tensor) -> torch.Tensor:
        """y_c(t) for each cue (n,): (n, T) float."""
        return (sum_of_sines(self.times, self.periods, self.amplitudes, self.phases, self.tempo(cue)) / self.scale).float()

    def draw(self, cues: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> TrialSet:
        """n trials cycling through `cues`: x (n, T, n_inputs + 1) = [clock, cue] + noise * N(0, 1),
        y (n, T, 1) the cue's target, mask all ones. The trial's cue is x[:, :, -1] before noise."""
        cue = cues[torch.arange(n) % len(cues)].float()
        clean = torch.cat([self.pattern.expand(n, self.T, self.n_inputs),
                           cue[:, None, None].expand(n, self.T, 1)], dim=-1)
        x = clean + noise * torch.randn(n, self.T, self.input_size, generator=generator)
        return TrialSet(x, self.target(cue)[:, :, None], torch.ones(n, self.T))

    def make_sets(self) -> tuple[TrialSet, TrialSet]:
        # separate streams, and the test cues are never training cues
        train = self.draw(trained_cues(self.n_cues), self.train_size, self.noise,
                          torch.Generator().manual_seed(3 * self.seed + 1))
        test = self.draw(held_out_cues(self.n_cues), self.test_size, self.test_noise,
                         torch.Generator().manual_seed(3 * self.seed + 2))
        return train, test

    def make_shift_set(self) -> TrialSet | None:
        if self.shift_noise is None:
            return None
        return self.draw(held_out_cues(self.n_cues), self.test_size, self.shift_noise,
                         torch.Generator().manual_seed(3 * self.seed + 100_003))
