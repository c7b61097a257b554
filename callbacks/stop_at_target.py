"""Stop training at the first step whose score reaches a target — the study's matched points:

    stop_at_train_acc=a    stop at the first step where training accuracy >= a (compare rules at matched
                           training accuracy; the reference gives its bio rules more iterations)
    stop_at_train_loss=l   the same for regression tasks: training loss <= l
    stop_at_test_acc=a     App. Table 1's control: BPTT stopped early at a bio rule's test accuracy
    stop_at_test_loss=l    its regression counterpart

The one callback that steers training, and only when asked for. It scores the whole set itself, before the
measurement callbacks run, so that when it stops at step k every measurement records step k as the final
one. Scoring the set costs up to ~13 training steps (seqMNIST's 4,000 images), so it checks every
`stop_check_every` steps and keeps the state of the last check below the target (`checkpoints/
stop_window.ckpt`, written after that step's measurements). When a check finds the target reached and the
check before was more than one step earlier, the run goes back to that state and trains the steps between
again — a resume is exact, so they are the same steps — checking after every one: it stops at the first step
at or past the target since the last check below it, and the step before was checked and found below
(`stop_exact` in the record). That costs at most `stop_check_every` steps and checks once per run. Runs on
several devices (DDP) do not go back: they stop at the check, with `stop_exact: false` unless
`stop_check_every=1`. A score that touches the target between two checks and falls back below it is not
seen by any check; `stop_check_every=1` checks every step.

The record (summary.json) gets `stop_target` {metric, target}, `stopped_at` (null: the step cap came first),
`stop_score`, `stop_overshoot` (how far past the target, >= 0, in the score's units), `stop_exact`,
`stop_previous_check` [step, score], `stop_checks` and `stop_replayed_steps`. A target given as
`<key>_from=<glob>` is the mean of that score over the finished runs the glob names (waiting `stop_wait_s`
for them), e.g. BPTT stopped at the mean final test accuracy of the bio rules' runs of the same sweep.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl

from callbacks.generalization import evaluate
from callbacks.timing import Timed
from modules.run_records import finished_records

# config key -> (set, score, direction): reached when score >= target (+1) or <= target (-1)
TARGETS = {"stop_at_train_acc": ("train", "acc", +1), "stop_at_train_loss": ("train", "loss", -1),
           "stop_at_test_acc": ("test", "acc", +1), "stop_at_test_loss": ("test", "loss", -1)}


def mean_of_runs(pattern: str, field: str, wait_s: float = 0.0, statuses=("ok",)) -> float:
    """Mean of summary.json[field] over the finished runs in the run dirs that `pattern` names (globs,
    separated by commas), waiting up to wait_s seconds until every matching directory holds a finished
    record. Only runs whose status is in `statuses` count."""
    finished, n_finished, n_dirs = finished_records(pattern, wait_s)
    if finished is None:
        raise ValueError(f"{pattern!r}: {n_finished} of {n_dirs} runs finished; no target for {field}")
    values = [r.get(field) for r in finished if r.get("status") in statuses]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        raise ValueError(f"no finished run under {pattern!r} has a {field}")
    return sum(values) / len(values)


def requested_targets(cfg) -> list[str]:
    """The stop keys the config sets, by value or as `<key>_from` (validate.py refuses more than one)."""
    return [k for k in TARGETS if cfg.get(k) is not None or cfg.get(f"{k}_from") is not None]


class StopAtTarget(Timed, pl.Callback):
    """Stops at the first step whose score reaches the target (module docstring): sparse checks, then the
    last interval trained again step by step from the last check below the target."""

    def __init__(self, key: str, target: float, check_every: int = 10, window: str | Path | None = None):
        if key not in TARGETS:
            raise ValueError(f"unknown stop target {key!r}; choose one of: {', '.join(TARGETS)}")
        self.key, self.target, self.check_every = key, float(target), max(int(check_every), 1)
        self.split, self.score, self.direction = TARGETS[key]
        self.window = Path(window) if window is not None else None  # where the last check below is kept
        self.stopped_at: int | None = None
        self.stop_score: float | None = None
        self.last_check: tuple[int, float] | None = None   # (step, score) of the latest check below target
        self.previous_check: tuple[int, float] | None = None  # the check before the stop (for the record)
        self.checks = 0
        # not checkpointed: they steer the replay of one interval within this process
        self.save_window = False        # the state after this step is the window to go back to
        self.rewind_from: int | None = None  # go back to the window (the check at this step) and replay
        self.replay_until: int | None = None  # while replaying, check every step up to here
        self.replayed_steps = 0

    @classmethod
    def from_config(cls, cfg, window: str | Path | None = None) -> "StopAtTarget | None":
        """The stop callback the config asks for (at most one target), or None."""
        asked = requested_targets(cfg)
        if not asked:
            return None
        if len(asked) > 1:
            raise ValueError(f"at most one stop target at a time; got {', '.join(asked)}")
        key = asked[0]
        target = cfg.get(key)
        if target is None:
            split, score, _ = TARGETS[key]
            target = mean_of_runs(cfg.get(f"{key}_from"), f"{split}_{score}", cfg.get("stop_wait_s", 0.0))
        return cls(key, target, cfg.get("stop_check_every", 10), window)

    @property
    def metric(self) -> str:
        return f"{self.split}/{self.score}"

    def reached(self, value: float) -> bool:
        return value >= self.target if self.direction > 0 else value <= self.target

    def distance(self, value: float) -> float:
        """How far the score still is from the target (> 0 below it)."""
        return self.direction * (self.target - value)

    def due(self, step: int) -> bool:
        return step % self.check_every == 0 or (self.replay_until is not None and step <= self.replay_until)

    def check(self, step: int, value: float) -> bool:
        """Record the check of `step`; True when the target is reached there."""
        self.checks += 1
        if self.reached(value):
            self.stopped_at, self.stop_score, self.previous_check = step, value, self.last_check
            return True
        self.last_check = (step, value)
        return False

    def can_go_back(self, trainer) -> bool:
        """The window exists and this run may replay from it (one process: DDP ranks would have to agree)."""
        return (self.window is not None and self.window.is_file() and trainer.world_size == 1
                and self.last_check is not None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step  # the weights after step `step`
        self.save_window = False
        if self.stopped_at is not None or not self.due(step):
            return
        dm, net = trainer.datamodule, pl_module.net
        with self.timed():
            value = evaluate(net, dm.train_set if self.split == "train" else dm.test_set, dm.loss)[self.score]
        if not self.check(step, value):
            self.save_window = self.replay_until is None and self.window is not None and trainer.world_size == 1
            return
        gap = step - self.previous_check[0] if self.previous_check is not None else None
        if gap is not None and gap > 1 and self.replay_until is None and self.can_go_back(trainer):
            # the first step at or past the target lies in (previous check, step]: train them again, checking each
            self.rewind_from, self.replay_until, self.replayed_steps = self.previous_check[0], step, gap
            self.stopped_at = self.stop_score = self.previous_check = None
            trainer.rulescape_rewind = True  # the measurements and the record skip this step (history.py)
        trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        if self.rewind_from is None:  # the run's real end: the window is not needed any more
            self.replay_until = None
            if self.window is not None and trainer.is_global_zero:
                self.window.unlink(missing_ok=True)

    @property
    def exact(self) -> bool | None:
        """The step before the stop was checked and was below the target. None while not stopped there."""
        if self.stopped_at is None:
            return None
        return self.previous_check is not None and self.previous_check[0] == self.stopped_at - 1

    def summary(self) -> dict:
        """What the run record says about the stop (module docstring)."""
        overshoot = None if self.stop_score is None else -self.distance(self.stop_score)
        return {"stop_target": {"metric": self.metric, "target": self.target},
                "stopped_at": self.stopped_at, "stop_score": self.stop_score, "stop_overshoot": overshoot,
                "stop_exact": self.exact, "stop_previous_check": list(self.previous_check) if self.previous_check
                else None, "stop_checks": self.checks, "stop_replayed_steps": self.replayed_steps}

    def state_dict(self) -> dict:
        return {"stopped_at": self.stopped_at, "target": self.target, "seconds": self.seconds,
                "stop_score": self.stop_score, "last_check": self.last_check, "previous_check": self.previous_check,
                "checks": self.checks}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stopped_at = state_dict.get("stopped_at")
        self.target = float(state_dict.get("target", self.target))  # a resumed run keeps its target
        self.seconds = float(state_dict.get("seconds", 0.0))
        self.stop_score = state_dict.get("stop_score")
        last, previous = state_dict.get("last_check"), state_dict.get("previous_check")
        self.last_check = (int(last[0]), float(last[1])) if last is not None else None
        self.previous_check = (int(previous[0]), float(previous[1])) if previous is not None else None
        self.checks = int(state_dict.get("checks", self.checks))


class StopWindow(pl.Callback):
    """Writes the stop's window checkpoint after every callback has handled the step (placed last among the
    callbacks that measure, like ModelCheckpoint), so that going back to it replays nothing twice."""

    def __init__(self, stop: StopAtTarget):
        self.stop = stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.stop.save_window and self.stop.window is not None:
            with self.stop.timed():  # the window's cost is the stop's (summary.json timing)
                self.stop.window.parent.mkdir(parents=True, exist_ok=True)
                trainer.save_checkpoint(str(self.stop.window), weights_only=False)
            self.stop.save_window = False
