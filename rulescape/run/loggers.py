"""Loggers from `logger=`: wandb (online when logged in, offline otherwise), csv, none.

Both loggers write each measurement once, at the training step it was measured at. Lightning hands a
logger every value logged so far at every step (a value logged at step 0 is re-sent, unchanged, until it
is logged again) and stamps it with the index of the current batch, one behind the measurement callbacks'
steps. So the loggers here take the measurements from the callbacks' histories ({key: [[step, value], ...]},
each point sent once, at its own step) and send anything else (the batch loss) only when it was logged
anew, at the batch's step. metrics.csv gets one row per step at which something was measured; the wandb
x-axis is `trainer/global_step`, the same step.
"""
from __future__ import annotations

import csv
import netrc
import os
import secrets
import string
import weakref
from collections import defaultdict
from pathlib import Path

from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.utilities import rank_zero_only

from callbacks.history import merged_history
from rulescape.config.schema import LOGGERS

RUN_ID_FILE = "wandb_run_id"  # in the run dir: a resumed run continues the same wandb run


def wandb_logged_in() -> bool:
    """True when an API key is available without asking the network (env var or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    return "online" if wandb_logged_in() else "offline"


class MeasuredSteps:
    """Mixin for a Lightning Logger: send each value once, at the step it was measured (module docstring)."""

    def _init_measured_steps(self) -> None:
        self._trainer = None        # weakref to the trainer, set when Lightning calls log_graph at fit start
        self._sent: dict[str, int] = {}  # history key -> number of its points already sent
        self._last_logged: dict[str, object] = {}  # other key -> the tensor Lightning last held for it
        self._rows: dict[int, dict] = defaultdict(dict)  # step -> values, until no more can come for it

    def log_graph(self, model, input_array=None) -> None:
        """Called by Lightning at the start of every fit, after a checkpoint's histories were restored:
        those points were sent by the run that measured them."""
        trainer = model.trainer
        self._trainer = weakref.ref(trainer)
        self._sent = {key: len(points) for key, points in merged_history(trainer).items()}
        self._fresh_keys(trainer)  # what Lightning holds now is not news either

    def _fresh_keys(self, trainer) -> set[str] | None:
        """Names of the values logged (self.log) since the last call; None if that cannot be told."""
        try:
            results = trainer._results
            fresh = set()
            for item in (results.values() if results is not None else []):
                cache, name = getattr(item, "_forward_cache", None), item.meta.name
                if cache is not None and self._last_logged.get(name) is not cache:
                    fresh.add(name)
                    self._last_logged[name] = cache
            return fresh
        except (AttributeError, RuntimeError):
            return None

    def _collect_measurements(self, trainer) -> None:
        for key, points in merged_history(trainer).items():
            for step, value in points[self._sent.get(key, 0):]:
                self._rows[int(step)][key] = float(value)
            self._sent[key] = len(points)

    def _flush(self, before: int | None = None) -> None:
        """Write the rows of the steps before `before` (all of them if None), in step order."""
        for at in sorted(self._rows):
            if before is not None and at >= before:
                break
            self._write(self._rows.pop(at), at)

    def log_metrics(self, metrics, step=None) -> None:
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None:  # outside a fit: as given
            self._write(dict(metrics), step)
            return
        self._collect_measurements(trainer)
        measured = set(merged_history(trainer))
        fresh = self._fresh_keys(trainer)
        for key, value in metrics.items():
            if key in measured or key == "epoch" or (fresh is not None and key not in fresh):
                continue
            self._rows[int(step) if step is not None else trainer.global_step][key] = value
        # Lightning calls this at the end of each batch, when global_step is already the next step's:
        # nothing more can be measured for the steps before it (step k's "before" and "after" measurements
        # and batch loss are all in by the end of batch k)
        self._flush(before=trainer.global_step)

    def finalize(self, status: str) -> None:
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is not None:  # measurements taken after Lightning's last call (e.g. in on_train_end)
            self._collect_measurements(trainer)
        self._flush()
        super().finalize(status)

    def _write(self, metrics: dict, step) -> None:
        raise NotImplementedError


class CSVLogger(MeasuredSteps, Logger):
    """<run dir>/metrics.csv: a `step` column, then one column per key; a row per step at which something
    was measured, blank where that key was not measured. Written as it goes (nothing lost on a crash);
    `resume=True` appends to the existing file."""

    def __init__(self, out_dir: str | Path, resume: bool = False):
        super().__init__()
        self._init_measured_steps()
        self.path = Path(out_dir) / "metrics.csv"
        self.keys: list[str] = []
        if resume and self.path.exists():
            with self.path.open(newline="") as f:
                self.keys = [k for k in (next(csv.reader(f), None) or []) if k != "step"]
        elif rank_zero_only.rank == 0:
            self.path.unlink(missing_ok=True)

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The config is in summary.json and .hydra/config.yaml already."""

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:  # a DDP worker's rows would go to rank 0's file
        super().finalize(status)

    def _write(self, metrics: dict, step) -> None:
        metrics = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        new = sorted(set(metrics) - set(self.keys))
        if new and self.path.exists():  # a new column: rewrite the file under the wider header
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            self.keys = sorted(self.keys + new)
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["step", *self.keys])
                writer.writeheader()
                writer.writerows(rows)
        elif new:
            self.keys = sorted(self.keys + new)
        fresh_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", *self.keys])
            if fresh_file:
                writer.writeheader()
            writer.writerow({"step": step, **metrics})


class WandbLogger(MeasuredSteps, LightningWandbLogger):
    """Lightning's WandbLogger with measured steps, the run config at the top level (rule, task, seed, ...)
    and without the deprecated `anonymous` argument (wandb warns about it on every run)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._init_measured_steps()
        self._wandb_init.pop("anonymous", None)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        params = dict(params)
        config = params.pop("config", None)
        super().log_hyperparams({**(config if isinstance(config, dict) else {}), **params})

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        MeasuredSteps.log_metrics(self, metrics, step)

    def _write(self, metrics: dict, step) -> None:
        LightningWandbLogger.log_metrics(self, metrics, step)


def sweep_group() -> str | None:
    """In a Hydra sweep: the sweep directory's name, so that wandb groups the sweep's runs."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return Path(HydraConfig.get().sweep.dir).name
    except Exception:  # noqa: BLE001 - no Hydra (a library call): no group
        pass
    return None


def wandb_run_id(out_dir: Path, resume: bool) -> str:
    """The wandb run id stored in the run dir (a resumed run continues that run), or a new one."""
    path = Path(out_dir) / RUN_ID_FILE
    if resume and path.exists() and path.read_text().strip():
        return path.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # wandb's form
    if rank_zero_only.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
    return run_id


def build_loggers(cfg, out_dir: Path, run_name: str, resume: bool = False) -> list[Logger]:
    """The loggers for `logger=`; `resume=True` appends to metrics.csv and continues the run's wandb run."""
    name = cfg.logger.name
    if name == "none":
        return []
    if name == "csv":
        return [CSVLogger(out_dir, resume=resume)]
    if name == "wandb":
        mode = wandb_mode(cfg.logger.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        if rank_zero_only.rank == 0:
            print(wandb_start_line(mode, cfg.logger.mode, cfg.logger.project, out_dir), flush=True)
        return [WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity,
                            group=cfg.logger.group or sweep_group(), tags=list(cfg.logger.tags or []),
                            name=run_name, save_dir=str(out_dir), mode=mode, id=wandb_run_id(out_dir, resume))]
    raise ValueError(f"unknown logger '{name}'; choose one of: {', '.join(LOGGERS)}")


def wandb_start_line(mode: str, requested: str, project: str, out_dir: Path) -> str:
    """The one line a run prints about wandb when it starts: its mode, why, and where its files go."""
    why = {"online": "logged in" if requested == "auto" else "logger.mode=online",
           "offline": ("no API key found (set WANDB_API_KEY or run `wandb login` to go online)"
                       if requested == "auto" else "logger.mode=offline"),
           "disabled": "nothing is logged to wandb"}.get(mode, mode)
    if requested == "auto" and os.environ.get("WANDB_MODE"):
        why = f"WANDB_MODE={os.environ['WANDB_MODE']}"
    where = (f"project {project}; local copy in {Path(out_dir) / 'wandb'}" if mode == "online"
             else f"run folder {Path(out_dir) / 'wandb'}; the `wandb sync` command comes at the end"
             if mode == "offline" else "use logger=csv for a local metrics.csv")
    return f"wandb: {mode}, {why}; {where}"


def wandb_sync_line(run_dir: str | Path) -> str:
    return f"wandb: offline run saved; upload it with: wandb sync {run_dir}"


def close_loggers() -> None:
    """Finish any open wandb run, so that the next job of a sweep starts clean; an offline run prints the
    `wandb sync` command that uploads it."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        offline = bool(getattr(wandb.run, "offline", False)) or getattr(wandb.run.settings, "mode", "") == "offline"
        folder = Path(wandb.run.dir).parent if offline else None  # <out>/wandb/offline-run-<time>-<id>
        wandb.finish()
        if folder is not None:
            print(wandb_sync_line(folder), flush=True)
