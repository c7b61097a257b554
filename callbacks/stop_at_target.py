"""Stop training once a score reaches a target — the study's matched points:

    stop_at_train_acc=a    stop at the first check where training accuracy >= a (compare rules at matched
                           training accuracy; the reference gives its bio rules more iterations)
    stop_at_train_loss=l   the same for regression tasks: training loss <= l
    stop_at_test_acc=a     App. Table 1's control: BPTT stopped early at a bio rule's test accuracy
    stop_at_test_loss=l    its regression counterpart

The one callback that steers training, and only when asked for. It evaluates the score itself on the whole
set every `stop_check_every` steps (fine enough to hit a target that BPTT crosses within a few dozen steps;
the measurement cadence `eval_every` is not), before the measurement callbacks run, so that when it stops
at step k every measurement records step k as the final one. A target given as `<key>_from=<glob>` is the
mean of that score over the finished runs the glob names (waiting `stop_wait_s` for them), e.g. BPTT
stopped at the mean final test accuracy of the bio rules' runs of the same sweep.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytorch_lightning as pl

from callbacks.generalization import evaluate
from callbacks.timing import Timed
from modules.run_records import run_dirs, wait_for

# config key -> (set, score, direction): reached when score >= target (+1) or <= target (-1)
TARGETS = {"stop_at_train_acc": ("train", "acc", +1), "stop_at_train_loss": ("train", "loss", -1),
           "stop_at_test_acc": ("test", "acc", +1), "stop_at_test_loss": ("test", "loss", -1)}


def mean_of_runs(pattern: str, field: str, wait_s: float = 0.0, statuses=("ok",)) -> float:
    """Mean of summary.json[field] over the finished runs in the run dirs that `pattern` names (globs,
    separated by commas), waiting up to wait_s seconds until every matching directory holds a finished
    record. Only runs whose status is in `statuses` count."""
    seen = {"finished": 0, "dirs": 0}

    def all_finished() -> list[dict] | None:
        dirs = run_dirs(str(pattern).split(","))
        records = []
        for d in dirs:
            path = Path(d, "summary.json")
            if not path.is_file():  # a FIFO or directory of that name would block or fail: not a record
                continue
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass
        finished = [r for r in records if isinstance(r, dict) and r.get("status") not in (None, "interrupted")]
        seen.update(finished=len(finished), dirs=len(dirs))
        return finished if dirs and len(finished) == len(dirs) else None

    finished = wait_for(all_finished, wait_s)
    if finished is None:
        raise ValueError(f"{pattern!r}: {seen['finished']} of {seen['dirs']} runs finished; no target for {field}")
    values = [r.get(field) for r in finished if r.get("status") in statuses]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        raise ValueError(f"no finished run under {pattern!r} has a {field}")
    return sum(values) / len(values)


def requested_targets(cfg) -> list[str]:
    """The stop keys the config sets, by value or as `<key>_from` (validate.py refuses more than one)."""
    return [k for k in TARGETS if cfg.get(k) is not None or cfg.get(f"{k}_from") is not None]


class StopAtTarget(Timed, pl.Callback):
    def __init__(self, key: str, target: float, check_every: int = 10):
        if key not in TARGETS:
            raise ValueError(f"unknown stop target {key!r}; choose one of: {', '.join(TARGETS)}")
        self.key, self.target, self.check_every = key, float(target), max(int(check_every), 1)
        self.split, self.score, self.direction = TARGETS[key]
        self.stopped_at: int | None = None

    @classmethod
    def from_config(cls, cfg) -> "StopAtTarget | None":
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
        return cls(key, target, cfg.get("stop_check_every", 10))

    @property
    def metric(self) -> str:
        return f"{self.split}/{self.score}"

    def reached(self, value: float) -> bool:
        return value >= self.target if self.direction > 0 else value <= self.target

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if self.stopped_at is not None or step % self.check_every:
            return
        dm, net = trainer.datamodule, pl_module.net
        with self.timed():
            value = evaluate(net, dm.train_set if self.split == "train" else dm.test_set, dm.loss)[self.score]
        if self.reached(value):
            self.stopped_at = step
            trainer.should_stop = True

    def summary(self) -> dict:
        """What the run record says about the stop: the target and the step it was reached (None: never)."""
        return {"stop_target": {"metric": self.metric, "target": self.target}, "stopped_at": self.stopped_at}

    def state_dict(self) -> dict:
        return {"stopped_at": self.stopped_at, "target": self.target, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stopped_at = state_dict.get("stopped_at")
        self.target = float(state_dict.get("target", self.target))  # a resumed run keeps its target
        self.seconds = float(state_dict.get("seconds", 0.0))
