"""The run record: summary.json in the run directory, written on rank 0 at the end of training and on
failure, with a status. Fields are documented in README ("The run record")."""
from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl

from callbacks.history import merged_history
from callbacks.timing import timing
from modules.record import (FINAL_KEYS, STATUSES, build_summary, clean, finite_mean, git_commit,  # noqa: F401 - re-exported
                              history_name, last, versions, write_summary)


class RunRecord(pl.Callback):
    """Collects every callback's `history` and writes summary.json (rank 0) when training ends or fails.
    wall_time_s covers the whole run: the time before a resume travels in the checkpoint."""

    def __init__(self, out_dir: str | Path, config: dict, keep_on_failure: bool = False):
        self.out_dir, self.config = Path(out_dir), config
        # resuming a run whose record says more than "failed": a failure is reported, not written over it
        self.keep_on_failure = keep_on_failure
        self.start = time.time()
        self.earlier_wall_s = 0.0  # wall time of the run before the checkpoint it resumed
        self.loop_start: float | None = None  # when this process's training loop began
        self.earlier_loop_s = 0.0  # training-loop time before the checkpoint it resumed
        self.written_status: str | None = None
        self.error: str | None = None
        self.replaying = False  # the stop's replay restores this process's own checkpoint: keep the clocks

    def wall_time_s(self) -> float:
        return self.earlier_wall_s + time.time() - self.start

    def loop_s(self) -> float:
        return self.earlier_loop_s + (time.time() - self.loop_start if self.loop_start is not None else 0.0)

    def state_dict(self) -> dict:
        return {"wall_time_s": self.wall_time_s(), "loop_s": self.loop_s()}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.replaying:  # the times so far are this process's own, the replayed steps included
            self.replaying = False
            return
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
        if status == "failed" and self.keep_on_failure:
            self.written_status, self.error = None, error
            return
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
        if getattr(trainer, "rulescape_rewind", False):  # not the end: the stop trains its last interval again
            self.earlier_loop_s, self.loop_start, self.replaying = self.loop_s(), None, True
            return
        self.write(trainer, pl_module, "ok")

    def on_exception(self, trainer, pl_module, exception):
        from modules.lit_module import Diverged  # local: callbacks know no module at import time
        if isinstance(exception, Diverged):
            self.write(trainer, pl_module, "diverged", error=str(exception))
        elif isinstance(exception, (KeyboardInterrupt, SystemExit)):
            self.write(trainer, pl_module, "interrupted", error=type(exception).__name__)
        else:
            self.write(trainer, pl_module, "failed", error=f"{type(exception).__name__}: {exception}")
