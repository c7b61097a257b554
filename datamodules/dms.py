"""Delayed match-to-sample: a sample stimulus, a delay, a test stimulus; answer match (1) or non-match (0)
with cross-entropy on the last `response_steps` steps of the trial.

Inputs are one-hot stimulus channels (amplitude 1 while a stimulus is on) plus i.i.d. Gaussian noise on
every channel and step. Timing is in ms and converted with dt; defaults give T = 50 steps of 20 ms.
Trials are balanced (half match). The training set is a fixed, seeded set of `train_size` trials; the
test set is `test_size` fresh trials (another random stream) of the same distribution (`test_noise`
defaults to `noise`), so the gap measures generalization, not a distribution shift. The shifted test set
(shift/* metrics) has `shift_noise` and delays drawn from `shift_delays` when given (the sample then starts
earlier or later; the trial end stays fixed).

ideal_observer_accuracy() scores the Bayes-optimal decision on a trial set (it knows the generative model:
timing, amplitude, noise): the best accuracy any network could reach on it.
"""
from __future__ import annotations

import torch

from datamodules.base import TrialDataModule, TrialSet


class DMSDataModule(TrialDataModule):
    loss = "ce"
    output_size = 2

    def __init__(self, n_stimuli: int = 2, dt: float = 20.0, fixation: float = 100.0, sample: float = 200.0,
                 delay: float = 500.0, test: float = 200.0, response_steps: int = 1, amplitude: float = 1.0,
                 train_size: int = 512, test_size: int = 1024, noise: float = 0.1, test_noise: float | None = None,
                 shift_noise: float | None = None, shift_delays: list[float] | None = None, batch_size: int = 64,
                 seed: int = 0, **_ignored):
        super().__init__(batch_size=batch_size, seed=seed)
        if n_stimuli < 2:
            raise ValueError(f"task.n_stimuli must be >= 2, got {n_stimuli}")
        self.n_stimuli, self.dt, self.amplitude = int(n_stimuli), float(dt), float(amplitude)
        self.steps = {k: int(round(v / dt)) for k, v in
                      dict(fixation=fixation, sample=sample, delay=delay, test=test).items()}
        self.T = sum(self.steps.values())
        self.response_steps = int(response_steps)
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.noise = float(noise)
        self.test_noise = self.noise if test_noise is None else float(test_noise)
        self.shift_noise = None if shift_noise is None else float(shift_noise)
        self.shift_delays = [int(round(d / dt)) for d in (shift_delays or [])]
        max_delay = self.steps["fixation"] + self.steps["delay"]
        for d in self.shift_delays:
            if not 0 <= d <= max_delay:
                raise ValueError(f"task.shift_delays: {d * dt:g} ms does not fit a trial; allowed 0..{max_delay * dt:g} ms")
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
        test = self.draw(self.test_size, self.test_noise, torch.Generator().manual_seed(2 * self.seed + 1))
        return train, test

    def make_shift_set(self) -> TrialSet | None:
        if self.shift_noise is None and not self.shift_delays:
            return None
        noise = self.test_noise if self.shift_noise is None else self.shift_noise
        return self.draw(self.test_size, noise, torch.Generator().manual_seed(2 * self.seed + 100_001),
                         delays=self.shift_delays or None)

    def ideal_observer_accuracy(self, trials: TrialSet, noise: float) -> float:
        """Accuracy of the Bayes-optimal match/non-match decision on `trials` (standard timing, i.i.d.
        Gaussian noise of std `noise`, equal priors): the posterior of "match" from the summed evidence of
        every stimulus channel over the sample and the test windows."""
        s = self.steps
        test_on = self.T - s["test"]
        sample_on = test_on - s["delay"] - s["sample"]
        x = trials.x.double()
        sample_ev = x[:, sample_on:sample_on + s["sample"]].sum(1)  # (n, K): N(amp * n_sample * onehot, n_sample sigma^2)
        test_ev = x[:, test_on:].sum(1)
        a = self.amplitude / noise ** 2
        log_s, log_t = a * sample_ev, a * test_ev      # log-likelihood of each stimulus, up to a constant
        joint = log_s[:, :, None] + log_t[:, None, :]   # (n, K_sample, K_test)
        eye = torch.eye(self.n_stimuli, dtype=torch.bool)
        k = self.n_stimuli
        # equal priors: P(match) = 1/2 spread over K pairs, P(non-match) = 1/2 over K(K-1) pairs
        log_match = torch.logsumexp(joint[:, eye], dim=1) - torch.log(torch.tensor(float(k)))
        log_non = torch.logsumexp(joint[:, ~eye], dim=1) - torch.log(torch.tensor(float(k * (k - 1))))
        decision = (log_match > log_non).long()
        return float((decision == trials.y[:, -1]).double().mean())
