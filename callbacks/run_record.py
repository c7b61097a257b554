"""The run record: summary.json in the run directory, written on rank 0 at the end of training and on
failure, with a status. Fields are documented in README ("The run record")."""
from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from callbacks.history import merged_history
from callbacks.timing import timing

STATUSES = ("ok", "diverged", "failed", "interrupted")


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    return {"torch": torch.__version__, "lightning": pl.__version__, "rulescape": git_commit()}


def last(history: dict, key: str):
    points = history.get(key) or []
    return points[-1][1] if points else None


def finite_mean(history: dict, key: str, default=None):
    """Mean of the finite values of history[key] (`default` when there are none)."""
    values = [v for _, v in history.get(key, []) if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else default


def clean(value):
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


# summary key -> history key (the logged metric name)
FINAL_KEYS = {"train_acc": "train/acc", "test_acc": "test/acc", "gap_acc": "gap/acc",
              "train_loss": "train/loss", "test_loss": "test/loss", "gap_loss": "gap/loss",
              "train_nmse": "train/nmse", "test_nmse": "test/nmse", "lambda_max": "curvature/lambda_max",
              "shift_acc": "shift/acc", "shift_loss": "shift/loss"}


HISTORY_ALIASES = {"curvature/lambda_max": "lambda_max", "align/rho": "rho"}


def history_name(key: str) -> str:
    """Logged key -> summary history name: train/acc -> train_acc, curvature/lambda_max -> lambda_max."""
    return HISTORY_ALIASES.get(key, key.replace("/", "_"))


def build_summary(status: str, config: dict, history: dict, steps: int, wall_time_s: float,
                  error: str | None = None, exact_rule: bool = False, extra: dict | None = None) -> dict:
    """The summary dict from a run's flat history {metric key: [[step, value], ...]}."""
    if status not in STATUSES:
        raise ValueError(f"unknown status '{status}'; choose one of: {', '.join(STATUSES)}")
    summary = {
        "status": status,
        "rule": config.get("rule", {}).get("name"),
        "task": config.get("task", {}).get("name"),
        "seed": config.get("seed"),
        "steps": steps,
        "lr": config.get("optimizer", {}).get("lr"),
    }
    summary.update({k: last(history, h) for k, h in FINAL_KEYS.items()})
    # over the run; an exact rule's estimate is the gradient, so both are 1 when alignment was not measured
    summary["rho_mean"] = finite_mean(history, "align/rho", 1.0 if exact_rule else None)
    summary["norm_ratio_mean"] = finite_mean(history, "align/norm_ratio", 1.0 if exact_rule else None)
    summary.update({"stop_target": None, "stopped_at": None, "warnings": [], "timing": None} | (extra or {}))
    summary["history"] = {history_name(k): v for k, v in history.items()}
    summary.update({"error": error, "wall_time_s": wall_time_s, "versions": versions(), "config": config})
    return clean(summary)


def write_summary(path: Path, summary: dict) -> None:
    """Atomic write: a reader never sees half a file, and a failed write (full disk) leaves the previous
    file and no temporary one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(summary, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class RunRecord(pl.Callback):
    """Collects every callback's `history` and writes summary.json (rank 0) when training ends or fails.
    wall_time_s covers the whole run: the time before a resume travels in the checkpoint."""

    def __init__(self, out_dir: str | Path, config: dict):
        self.out_dir, self.config = Path(out_dir), config
        self.start = time.time()
        self.earlier_wall_s = 0.0  # wall time of the run before the checkpoint it resumed
        self.loop_start: float | None = None  # when this process's training loop began
        self.earlier_loop_s = 0.0  # training-loop time before the checkpoint it resumed
        self.written_status: str | None = None
        self.error: str | None = None

    def wall_time_s(self) -> float:
        return self.earlier_wall_s + time.time() - self.start

    def loop_s(self) -> float:
        return self.earlier_loop_s + (time.time() - self.loop_start if self.loop_start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"wall_time_s": self.wall_time_s(), "loop_s": self.loop_s()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.earlier_wall_s = float(state_dict.get("wall_time_s", 0.0))
        self.earlier_loop_s = float(state_dict.get("loop_s", 0.0))

    def on_train_start(self, trainer, pl_module):
        self.loop_start = time.time()

    def write(self, trainer, pl_module, status: str, error: str | None = None) -> None:
        if trainer.global_rank != 0:
            return
        rule = getattr(pl_module, "rule", None)
        exact = bool(getattr(rule, "exact", False))
        extra = {"warnings": list(getattr(rule, "warnings", [])), "timing": timing(self.loop_s(), trainer.callbacks)}
        for cb in trainer.callbacks:  # the matched point, when the run had a stop target
            if callable(getattr(cb, "summary", None)):
                extra |= cb.summary()
        summary = build_summary(status, self.config, merged_history(trainer), trainer.global_step,
                                self.wall_time_s(), error=error, exact_rule=exact, extra=extra)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_summary(self.out_dir / "summary.json", summary)
        self.written_status, self.error = status, error
        self.publish(trainer, summary)

    def publish(self, trainer, summary: dict) -> None:
        """Hand summary.json to wandb (uploaded now, or with `wandb sync` when offline) and put the status
        and final scalars in the wandb run summary, so `report.py --wandb` reads the same record."""
        scalars = {k: v for k, v in summary.items() if isinstance(v, (str, int, float)) or v is None}
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                run = logger.experiment
                run.summary.update({f"run/{k}": v for k, v in scalars.items()})
                run.save(str(self.out_dir / "summary.json"), base_path=str(self.out_dir), policy="now")

    def on_train_end(self, trainer, pl_module):
        self.write(trainer, pl_module, "ok")

    def on_exception(self, trainer, pl_module, exception):
        from modules.lit_module import Diverged  # local: callbacks know no module at import time
        if isinstance(exception, Diverged):
            self.write(trainer, pl_module, "diverged", error=str(exception))
        elif isinstance(exception, (KeyboardInterrupt, SystemExit)):
            self.write(trainer, pl_module, "interrupted", error=type(exception).__name__)
        else:
            self.write(trainer, pl_module, "failed", error=f"{type(exception).__name__}: {exception}")
