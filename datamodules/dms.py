"""Delayed match-to-sample: a sample stimulus, a delay, a test stimulus; answer match (1) or non-match (0)
with cross-entropy on the last `response_steps` steps of the trial.

Inputs are one-hot stimulus channels (amplitude 1 while a stimulus is on) plus i.i.d. Gaussian noise on
every channel and step. Timing is in ms and converted with dt; defaults give T = 50 steps of 20 ms.
Trials are balanced (half match). The training set is a fixed, seeded set of `train_size` trials; the
test set is `test_size` fresh trials (another random stream) with `test_noise`, and with delays drawn
from `test_delays` when given (the sample then starts earlier or later; the trial end stays fixed).
"""
from __future__ import annotations

import torch

from datamodules.base import TrialDataModule, TrialSet


class DMSDataModule(TrialDataModule):
    loss = "ce"
    output_size = 2

    def __init__(self, n_stimuli: int = 2, dt: float = 20.0, fixation: float = 100.0, sample: float = 200.0,
                 delay: float = 500.0, test: float = 200.0, response_steps: int = 1, amplitude: float = 1.0,
                 train_size: int = 512, test_size: int = 1024, noise: float = 0.1, test_noise: float = 0.3,
                 test_delays: list[float] | None = None, batch_size: int = 64, seed: int = 0, **_ignored):
        super().__init__(batch_size=batch_size, seed=seed)
        if n_stimuli < 2:
            raise ValueError(f"task.n_stimuli must be >= 2, got {n_stimuli}")
        self.n_stimuli, self.dt, self.amplitude = int(n_stimuli), float(dt), float(amplitude)
        self.steps = {k: int(round(v / dt)) for k, v in
                      dict(fixation=fixation, sample=sample, delay=delay, test=test).items()}
        self.T = sum(self.steps.values())
        self.response_steps = int(response_steps)
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.noise, self.test_noise = float(noise), float(test_noise)
        self.test_delays = [int(round(d / dt)) for d in (test_delays or [])]
        max_delay = self.steps["fixation"] + self.steps["delay"]
        for d in self.test_delays:
            if not 0 <= d <= max_delay:
                raise ValueError(f"task.test_delays: {d * dt:g} ms does not fit a trial; allowed 0..{max_delay * dt:g} ms")
        if not 1 <= self.response_steps <= self.steps["test"]:
            raise ValueError(f"task.response_steps must be in 1..{self.steps['test']}, got {response_steps}")
        self.input_size = self.n_stimuli

    def draw(self, n: int, noise: float, generator: torch.Generator, delays: list[int] | None = None) -> TrialSet:
        """n balanced trials: x (n, T, n_stimuli), y (n, T) long, mask (n, T)."""
        s = self.steps
        label = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]          # 1 = match
        sample = torch.randint(self.n_stimuli, (n,), generator=generator)
        shift = torch.randint(1, self.n_stimuli, (n,), generator=generator)            # any other stimulus
        test = torch.where(label == 1, sample, (sample + shift) % self.n_stimuli)
        delay = torch.full((n,), s["delay"])
        if delays:
            delay = torch.tensor(delays)[torch.randint(len(delays), (n,), generator=generator)]
        test_on = self.T - s["test"]
        sample_on = test_on - delay - s["sample"]

        t = torch.arange(self.T)
        x = torch.zeros(n, self.T, self.n_stimuli)
        sample_window = (t >= sample_on[:, None]) & (t < (sample_on + s["sample"])[:, None])  # (n, T)
        test_window = t >= test_on
        rows = torch.arange(n)
        x[rows, :, sample] += self.amplitude * sample_window.float()
        x[rows, :, test] += self.amplitude * test_window.float().expand(n, -1)
        x += noise * torch.randn(x.shape, generator=generator)

        y = label[:, None].expand(n, self.T).contiguous()
        mask = torch.zeros(n, self.T)
        mask[:, self.T - self.response_steps:] = 1.0
        return TrialSet(x, y, mask)

    def make_sets(self) -> tuple[TrialSet, TrialSet]:
        # separate streams: the test set is fresh draws, never a re-draw of training trials
        train = self.draw(self.train_size, self.noise, torch.Generator().manual_seed(2 * self.seed))
        test = self.draw(self.test_size, self.test_noise, torch.Generator().manual_seed(2 * self.seed + 1),
                         delays=self.test_delays or None)
        return train, test
