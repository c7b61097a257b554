"""Any discrete-choice neurogym task (`task.env`, e.g. DelayMatchSample-v0) under rulescape's protocol.

neurogym builds one trial at a time: `env.ob` (T_i, N_in) inputs and `env.gt` (T_i,) the target action per
step (0 = fixate), with the trial's periods in `env.start_ind` / `env.end_ind`. This module draws
`train_size` trials once (the fixed training set) and `test_size` fresh trials (the test set) from two
environments seeded from `seed`, and stacks them into one length T:

- Trials are aligned at their end: a shorter trial is padded at its start with zero input and no loss, and
  a trial longer than `task.T` loses its first steps (fixation first). T defaults to the longest trial drawn.
- Loss steps (`task.loss_on`): `decision` (default) = the steps of the trial's `decision` period, or of its
  last period when the env names none `decision` (e.g. `test`, `production`, `reach`); the fixation steps
  before it carry no loss. `all` = every step of the trial (fixation steps with target 0, neurogym's
  supervised convention); padding never carries loss.
- Accuracy (the run's train_acc / test_acc) is the fraction of loss steps whose arg-max output is the target:
  with `decision`, the decision as neurogym scores it, held through the decision period.
  `neurogym_performance` gives neurogym's own per-trial score (the first non-fixation action of the
  decision period is the choice) for analysis.
- Input noise: the env's own (e.g. `sigma` in `task.kwargs`), plus, as in the hand-written tasks, N(0, noise^2)
  on every input and trial step (`task.noise`, default 0; `task.test_noise` for the test set, default = noise).
- The test set never repeats a training trial: a test draw whose inputs equal a training trial's is
  redrawn (a noise-free task with too few distinct trials is refused; `task.noise` makes any task usable).

Env keyword arguments (timing, sigma, dim_ring, ...) go in `task.kwargs`; `task.test_kwargs` overrides
some of them for the test environment only (e.g. a longer delay). neurogym's and gymnasium's warnings and
log lines stay out of the console.
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import warnings
from typing import Any

import numpy as np
import torch

from datamodules.base import TrialDataModule, TrialSet

LOSS_ON = ("decision", "all")
MAX_REDRAWS = 10  # test draws per requested test trial before a too-small task is refused


def _neurogym():
    """Import neurogym with its warnings and loguru log lines silenced (they say nothing about the run)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import neurogym
            from loguru import logger
    except ImportError as err:
        raise ValueError(f"task=neurogym needs the neurogym package (pip install -r requirements.txt): {err}") from None
    logger.disable("neurogym")
    return neurogym


def env_ids() -> list[str]:
    """Every registered neurogym task id, the collections (yang19.*, perceptualdecisionmaking.*) included."""
    _neurogym()
    from neurogym.envs.registration import ALL_EXTENDED_ENVS
    return sorted(ALL_EXTENDED_ENVS)


def resolve_env_id(env: str) -> str:
    """`env` as a registered id ('-v0' may be left out); ValueError (one line, the closest names) if unknown."""
    ids = env_ids()
    for candidate in (env, f"{env}-v0"):
        if candidate in ids:
            return candidate
    close = difflib.get_close_matches(env, ids, n=5, cutoff=0.5) or difflib.get_close_matches(
        f"{env}-v0", ids, n=5, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"choose one of: {', '.join(ids)}"
    raise ValueError(f"task.env={env!r} is not a neurogym task; {hint}")


def entry_point_parameters(env_id: str) -> list[str]:
    """The keyword arguments the env's constructor takes (for the error on an unknown keyword)."""
    from neurogym.envs.registration import ALL_EXTENDED_ENVS
    module, name = ALL_EXTENDED_ENVS[env_id].split(":")
    target = getattr(__import__(module, fromlist=[name]), name)
    target = target.__init__ if inspect.isclass(target) else target  # neurogym's metaclass hides the signature
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    return [p for p, spec in params.items() if p != "self" and spec.kind not in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD)]


def make_env(env_id: str, dt: float, kwargs: dict[str, Any], key: str = "task.kwargs"):
    """The unwrapped TrialEnv; ValueError (one line) for a keyword it does not take or a value it refuses."""
    ngym = _neurogym()
    accepted = entry_point_parameters(env_id)
    unknown = [k for k in kwargs if accepted and k not in accepted]
    if unknown or "dt" in kwargs:
        bad = unknown or ["dt"]
        raise ValueError(f"{key}: {env_id} takes no keyword {', '.join(map(repr, bad))}; it takes: "
                         f"{', '.join(p for p in accepted if p != 'dt') or 'none'} (dt is task.dt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = ngym.make(env_id, dt=dt, **kwargs).unwrapped
            env._top.new_trial()  # noqa: SLF001 - a probe: the sets are drawn after re-seeding
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"task.env={env_id} with {key}={dict(kwargs)} cannot be built: {reason}") from None
    if not (hasattr(env, "ob") and hasattr(env, "gt")):
        raise ValueError(f"task.env={env_id} builds no supervised trials (no ob/gt arrays: a reinforcement-learning-"
                         f"only env)")
    space = env.action_space
    if not hasattr(space, "n"):
        raise ValueError(f"task.env={env_id} has a continuous action space ({type(space).__name__}); the neurogym "
                         f"task takes discrete-choice envs (cross-entropy on the target action)")
    return env


def loss_steps(env, length: int, loss_on: str) -> np.ndarray:
    """(length,) 1 on the steps of the trial that carry loss: the decision period (or the last period), or all."""
    mask = np.zeros(length, dtype=np.float32)
    if loss_on == "all":
        mask[:] = 1.0
        return mask
    period = "decision" if "decision" in env.start_ind else max(env.end_ind, key=lambda p: (env.end_ind[p], env.start_ind[p]))
    mask[env.start_ind[period]:env.end_ind[period]] = 1.0
    return mask


def fingerprint(ob: np.ndarray) -> bytes:
    """A trial's inputs, hashed (deterministic across processes; the sets can be large)."""
    return hashlib.blake2b(ob.tobytes(), digest_size=16).digest()


def draw_trial(env, noise: float = 0.0, rng: np.random.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One trial: ob (T_i, N_in) plus N(0, noise^2) on every input and step of the trial, gt (T_i,), the
    decision-loss mask and the all-steps mask (T_i,)."""
    env._top.new_trial()  # noqa: SLF001 - honours trial wrappers when the env has them
    ob, gt = np.asarray(env.ob, dtype=np.float32), np.asarray(env.gt).astype(np.int64)
    if noise > 0:
        ob = ob + np.float32(noise) * rng.standard_normal(ob.shape, dtype=np.float32)
    return ob, gt, loss_steps(env, len(ob), "decision"), loss_steps(env, len(ob), "all")


def stack(trials: list[tuple], T: int, loss_on: str) -> TrialSet:
    """Align the trials at their end in T steps: zero-input, no-loss padding before a short trial; a long
    trial loses its first steps."""
    n, n_in = len(trials), trials[0][0].shape[1]
    x = torch.zeros(n, T, n_in)
    y = torch.zeros(n, T, dtype=torch.long)
    mask = torch.zeros(n, T)
    for i, (ob, gt, decision, every) in enumerate(trials):
        k = min(len(ob), T)
        x[i, T - k:] = torch.from_numpy(ob[-k:])
        y[i, T - k:] = torch.from_numpy(gt[-k:])
        mask[i, T - k:] = torch.from_numpy((decision if loss_on == "decision" else every)[-k:])
    return TrialSet(x, y, mask)


def neurogym_performance(y_hat: torch.Tensor, trials: TrialSet, decision: torch.Tensor | None = None) -> torch.Tensor:
    """neurogym's per-trial score: the choice is the first non-fixation (!= 0) arg-max action in the decision
    steps (`decision`, default the trial set's mask); 1 if it equals the target there, 0 otherwise (also when
    the network never leaves fixation). Returns (n,) floats."""
    decision = trials.mask if decision is None else decision
    action = y_hat.argmax(-1)                                            # (n, T)
    committed = (action != 0) & (decision > 0)
    any_choice = committed.any(dim=1)
    first = committed.float().argmax(dim=1)                              # first True (0 when none)
    rows = torch.arange(len(action))
    return (any_choice & (action[rows, first] == trials.y[rows, first])).float()


class NeurogymDataModule(TrialDataModule):
    loss = "ce"

    def __init__(self, env: str = "DelayMatchSample-v0", dt: float = 100.0, kwargs: dict | None = None,
                 test_kwargs: dict | None = None, T: int | None = None, loss_on: str = "decision",
                 train_size: int = 256, test_size: int = 1024, noise: float = 0.0, test_noise: float | None = None,
                 batch_size: int = 64, seed: int = 0, **_ignored):
        super().__init__(batch_size=batch_size, seed=seed)
        if loss_on not in LOSS_ON:
            raise ValueError(f"task.loss_on={loss_on!r} is not allowed; choose one of: {', '.join(LOSS_ON)}")
        if not float(dt) > 0:
            raise ValueError(f"task.dt must be a positive number of ms, got {dt}")
        if T is not None and int(T) < 1:
            raise ValueError(f"task.T must be a positive number of steps or null (the longest trial), got {T}")
        self.env_id = resolve_env_id(str(env))
        self.dt, self.loss_on, self.T_cut = float(dt), loss_on, None if T is None else int(T)
        self.kwargs = dict(kwargs or {})
        self.test_kwargs = {**self.kwargs, **dict(test_kwargs or {})}
        self.train_size, self.test_size = int(train_size), int(test_size)
        self.noise = float(noise)
        self.test_noise = self.noise if test_noise is None else float(test_noise)
        if self.noise < 0 or self.test_noise < 0:
            raise ValueError(f"task.noise and task.test_noise must be >= 0, got {noise} and {test_noise}")
        # both envs now, so that a bad id, keyword or value fails before any training starts
        self.train_env = make_env(self.env_id, self.dt, self.kwargs)
        self.test_env = make_env(self.env_id, self.dt, self.test_kwargs, key="task.test_kwargs")
        self.input_size = int(self.train_env.observation_space.shape[0])
        self.output_size = int(self.train_env.action_space.n)
        if (int(self.test_env.observation_space.shape[0]), int(self.test_env.action_space.n)) != (
                self.input_size, self.output_size):
            raise ValueError("task.test_kwargs changes the number of inputs or actions; the test set must fit the "
                             "same network")
        # the trials too (milliseconds), so that impossible sizes or T fail before training as well
        self.sets = self.build_sets()

    def draw_sets(self) -> tuple[list[tuple], list[tuple]]:
        """The raw train and test trials; test trials equal to a training trial (by inputs) are redrawn."""
        self.train_env.seed(2 * self.seed)
        self.test_env.seed(2 * self.seed + 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                train_rng, test_rng = (np.random.default_rng([self.seed, k]) for k in (0, 1))
                train = [draw_trial(self.train_env, self.noise, train_rng) for _ in range(self.train_size)]
                seen = {fingerprint(trial[0]) for trial in train}
                test: list[tuple] = []
                for _ in range(MAX_REDRAWS * self.test_size):
                    trial = draw_trial(self.test_env, self.test_noise, test_rng)
                    if fingerprint(trial[0]) not in seen:
                        test.append(trial)
                        if len(test) == self.test_size:
                            return train, test
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"task.env={self.env_id} cannot draw trials with task.kwargs={self.kwargs} "
                             f"(test: {self.test_kwargs}): {reason}") from None
        raise ValueError(f"task.env={self.env_id} with these kwargs has too few distinct trials ({len(seen)} in "
                         f"{self.train_size} training draws): fewer than {self.test_size} test trials unseen in "
                         f"training; add input noise (task.noise=0.1) or lower task.test_size")

    def make_sets(self) -> tuple[TrialSet, TrialSet]:
        return self.sets

    def build_sets(self) -> tuple[TrialSet, TrialSet]:
        train, test = self.draw_sets()
        longest = max(len(trial[0]) for trial in (*train, *test))
        self.T = self.T_cut or longest
        train_set, test_set = stack(train, self.T, self.loss_on), stack(test, self.T, self.loss_on)
        for which, trials in (("training", train_set), ("test", test_set)):
            empty = int((trials.mask.sum(1) == 0).sum())
            if empty and self.T_cut is not None and self.T_cut < longest:
                raise ValueError(f"task.T={self.T} cuts every loss step of {empty} {which} trials of {self.env_id} "
                                 f"(trials are up to {longest} steps); raise task.T or leave it null")
            if empty:
                raise ValueError(f"{empty} {which} trials of {self.env_id} have no {self.loss_on} steps to carry "
                                 f"loss; check task.kwargs (timing)")
        return train_set, test_set
