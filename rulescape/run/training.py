"""Build a run from a composed config and train it: datamodule -> network -> rule -> LightningModule ->
callbacks, loggers -> Trainer. Always leaves a summary.json with a status and closes the loggers.

Everything that can be wrong with the input is found while building, before Trainer.fit spawns anything,
and raised as one ConfigError line. The run directory is locked for the run, and a directory that holds
another run's record or checkpoint is refused unless this run resumes that very checkpoint."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks import CALLBACKS
from callbacks.interrupt_checkpoint import InterruptCheckpoint
from callbacks.stop_at_target import StopAtTarget, StopWindow
from callbacks.run_record import RunRecord, build_summary, write_summary
from datamodules import build_datamodule
from modules.lit_module import Diverged, RuleModule, build_optimizer
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import build_rule, registry_problem
from modules.run_records import stop_step
from rulescape.config.schema import check_schema
from rulescape.config.targets import check_targets
from rulescape.config.validate import settle, validate
from rulescape.errors import (EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                              ConfigError)
from rulescape.run.checkpoint import SafeCheckpointIO, check_checkpoint
from rulescape.run.loggers import build_loggers, close_loggers
from rulescape.run.quiet import on_terminal, progress_bar, quiet_third_party
from rulescape.run.rundir import check_run_dir, read_status, run_dir_lock

log = logging.getLogger("rulescape")
STATUS_EXIT = {"ok": EXIT_OK, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED, "failed": EXIT_FAILED}


def group_params(node: DictConfig, *drop: str) -> dict:
    """The group's keys as plain values, without `drop` (dropped before resolving: they may refer to what
    only a sweep defines)."""
    return {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
            for k, v in ((k, node[k]) for k in node if k not in drop)}


def build_network(cfg: DictConfig, dm) -> RateRNN:
    m = cfg.model
    net = RateRNN(dm.input_size, m.hidden_size, dm.output_size, alpha=m.alpha, activation=m.activation,
                  g=m.g, bias=m.bias, noise_std=m.noise_std, dale=m.dale, n_cell_types=m.n_cell_types,
                  readout_scale=m.readout_scale)
    return net.double() if cfg.float64 else net


@contextlib.contextmanager
def building(what: str):
    """Any error while building `what` (a user's value the builder refused) -> one ConfigError line."""
    try:
        yield
    except ConfigError:
        raise
    except MemoryError:
        raise ConfigError(f"{what}: out of memory while building it (is model.hidden_size too large?)") from None
    except Exception as err:  # noqa: BLE001 - the builder's own message, on one line
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{what}: {text}") from None


def build_module(cfg: DictConfig, dm) -> RuleModule:
    """Datamodule -> network -> rule -> LightningModule, in the seeded order (init, then rule state)."""
    with building("model"):
        net = build_network(cfg, dm)
    with building(f"rule {cfg.rule.name}"):
        rule = build_rule(cfg.rule.name, net, **group_params(cfg.rule, "name"))
    with building("scheduler"):
        scheduler = build_optimizer(cfg.scheduler) if cfg.scheduler.get("_target_") else None
    with building("optimizer"):
        optimizer = build_optimizer(cfg.optimizer)
    config = OmegaConf.to_container(cfg, resolve=True)
    module = RuleModule(net, rule, Objective(dm.loss, cfg.l2), optimizer, scheduler,
                        seed=cfg.seed, config=config, clip_norm=cfg.clip_norm)
    with building(f"optimizer {cfg.optimizer.get('_target_')}"):
        module.configure_optimizers()  # a dry run: torch refuses bad values (momentum < 0) here, not in fit
    return module


def build_callbacks(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    measurements = [CALLBACKS[name].from_config(cfg) for name in cfg.callbacks.enabled]
    stop = StopAtTarget.from_config(cfg, window=out_dir / "checkpoints" / "stop_window.ckpt")
    if stop is not None:  # before the measurements: they then record its stopping step as the final one;
        measurements = [stop, *measurements, StopWindow(stop)]  # its window is saved after them
    last = out_dir / "checkpoints" / "last.ckpt"
    # no version counter: a run resumed into its own directory keeps updating last.ckpt
    checkpoint = ModelCheckpoint(dirpath=str(last.parent), save_last=True, save_top_k=0,
                                 every_n_train_steps=cfg.checkpoint_every or None, enable_version_counter=False)
    bar = [progress_bar(refresh_rate=25)] if cfg.trainer.get("enable_progress_bar", True) else []
    return [*measurements, checkpoint, InterruptCheckpoint(last), *bar]


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.rule.name}-{cfg.task.name}-s{cfg.seed}"


def resume_command(out_dir: Path) -> str:
    """The command line that continues this run in its own directory."""
    ckpt = out_dir / "checkpoints" / "last.ckpt"
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig
        if HydraConfig.initialized():
            overrides = [o for o in HydraConfig.get().overrides.task
                         if not o.startswith(("ckpt_path=", "hydra.run.dir=", "hydra.sweep."))]
    except Exception:  # noqa: BLE001 - without Hydra the bare command still resumes
        pass
    from rulescape.run.cli import override  # the paths Hydra-quoted (a non-ASCII or spaced run dir), then for a shell
    return "python train.py " + " ".join([*(shlex.quote(o) for o in overrides), override("ckpt_path", ckpt),
                                          override("hydra.run.dir", out_dir)])


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def log_to_file(message: str) -> None:
    """Write a line to the run's train.log (Hydra's file handler) without echoing it on the console."""
    record = logging.LogRecord("rulescape", logging.INFO, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def train(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train one run into out_dir and return its summary (also written to out_dir/summary.json).
    ConfigError propagates (nothing ran; a "failed" summary names the error unless the directory held an
    earlier record, which is never touched), and so does a KeyboardInterrupt before training (train.py
    records it); every other outcome is recorded with a status, and a resume that fails never replaces the
    run's earlier record."""
    quiet_third_party()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"run directory {out_dir} cannot be created ({err.strerror})") from None
    if launched_rank():  # a DDP worker that Lightning started as a copy of this command: rank 0 holds the lock
        return train_locked(cfg, out_dir)
    claim_rank_zero()
    with run_dir_lock(out_dir):
        check_run_dir(out_dir, OmegaConf.select(cfg, "ckpt_path", default=None))
        return train_locked(cfg, out_dir)


RANK0_ENV = "RULESCAPE_RANK0_PID"  # set by rank 0 before fit; its DDP workers are its children


def launched_rank() -> bool:
    """True only in a DDP worker (rank > 0) that this run's rank 0 started: strategy=ddp re-runs the command
    per rank as a child of rank 0. A LOCAL_RANK / NODE_RANK / RANK merely inherited from the environment
    (a shell, a scheduler) does not count: such a process is a run of its own, locked and checked."""
    def rank(name: str) -> int:
        try:
            return int(os.environ.get(name, "0") or 0)
        except ValueError:
            return 0
    claimed = any(rank(name) > 0 for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))
    return claimed and os.environ.get(RANK0_ENV) == str(os.getppid())


def claim_rank_zero() -> None:
    """This process is rank 0 of its run: Lightning's rank-zero-only writes (logs, metrics.csv) happen here
    whatever rank an inherited variable claimed."""
    from pytorch_lightning.utilities import rank_zero_only  # one object with lightning_fabric's
    rank_zero_only.rank = 0


def end_progress_line(cfg: DictConfig) -> None:
    """A run that stops mid-bar: end the progress bar's line, so that the message starts on its own."""
    if cfg.trainer.get("enable_progress_bar", True) and on_terminal():  # off a terminal each line is whole
        print(file=sys.stderr, flush=True)


def train_locked(cfg: DictConfig, out_dir: Path) -> dict:
    summary_path = out_dir / "summary.json"
    earlier_record = summary_path.exists()  # only ever a resumed run's own, or one of a run that never trained
    earlier_mtime = summary_path.stat().st_mtime_ns if earlier_record else None
    # a resumed run's record (ok, interrupted, ...) is replaced by what the resume achieves, never by "failed"
    keeps_record = earlier_record and read_status(summary_path) != "failed"
    kept: list[str] = []  # failures not written over it
    try:
        config = OmegaConf.to_container(cfg, resolve=False)
    except OmegaConfBaseException:
        config = {}
    start = time.time()

    def written_by_this_run() -> bool:  # by RunRecord, here or on rank 0 of a spawned DDP run
        return summary_path.exists() and summary_path.stat().st_mtime_ns != earlier_mtime

    def record_failure(error: str, before_run: bool) -> None:
        if launched_rank():
            return  # only rank 0 writes the record
        if keeps_record and not written_by_this_run():
            kept.append(error)  # a failed resume leaves the run's record as it was
            return
        if not written_by_this_run():
            try:
                write_summary(summary_path, build_summary("failed", config, {}, 0, time.time() - start, error=error))
            except OSError as err:  # a full disk: the previous file stays; say so in one line
                log.error("could not write %s (%s)", summary_path, err.strerror or err)

    try:
        check_targets(OmegaConf.to_container(cfg, resolve=True))  # first: nothing below instantiates a stranger
        problem = registry_problem(OmegaConf.select(cfg, "rule.name", default=None))
        if problem:  # two classes claim the name, a base-class clash, a rule file that failed to import
            raise ConfigError(problem)
        cfg = check_schema(cfg)
        validate(cfg)
        for note in settle(cfg):
            log.warning(note)
        if cfg.get("stop_at_step_from"):  # a control as long as its rule: that run's step count is the budget
            cfg.trainer.max_steps = stop_step(cfg.stop_at_step_from, "stop_at_step_from", cfg.stop_at_step_wait_s)
        config = OmegaConf.to_container(cfg, resolve=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        with building(f"task {cfg.task.name}"):
            dm = build_datamodule(cfg.task.name, **group_params(cfg.task, "name", "alpha", "study"))
        module = build_module(cfg, dm)
        check_checkpoint(cfg.ckpt_path, config, module)  # contents too: nothing is written before it fits
        record = RunRecord(out_dir, config, keep_on_failure=keeps_record)
        callbacks = [*build_callbacks(cfg, out_dir), record]
        with building(f"logger {cfg.logger.name}"):
            loggers = build_loggers(cfg, out_dir, run_name(cfg), resume=cfg.ckpt_path is not None)
        def new_trainer() -> pl.Trainer:
            return pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), callbacks=callbacks,
                              logger=loggers or False, default_root_dir=str(out_dir),
                              plugins=[SafeCheckpointIO()], use_distributed_sampler=False, max_epochs=-1)
        with building("trainer"):
            trainer = new_trainer()
    except (ConfigError, ValueError, OmegaConfBaseException) as err:
        close_loggers()
        message = str(err).splitlines()[0] if str(err) else type(err).__name__  # one line, always
        record_failure(message, before_run=True)
        raise ConfigError(message) from None

    log_to_file(f"run directory {out_dir}; {'resuming ' + str(cfg.ckpt_path) if cfg.ckpt_path else 'new run'}")
    if not launched_rank():  # the DDP workers Lightning starts during fit are this process's children
        os.environ[RANK0_ENV] = str(os.getpid())
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path, weights_only=True)  # SafeCheckpointIO
        stop = next((cb for cb in callbacks if isinstance(cb, StopAtTarget)), None)
        if stop is not None and stop.rewind_from is not None:
            # the target was passed between two checks: train that interval again from the last check below
            # it, checking every step (a resume is exact, so these are the same steps); one replay per run
            stop.rewind_from = None
            trainer = new_trainer()
            trainer.fit(module, datamodule=dm, ckpt_path=str(stop.window), weights_only=True)
    except Diverged as err:
        end_progress_line(cfg)
        log.warning(str(err))
    except (KeyboardInterrupt, SystemExit):
        end_progress_line(cfg)
        how = read_status(summary_path) == "interrupted" and json.loads(summary_path.read_text()).get("error")
        log.warning("interrupted (%s); resume with:\n  %s", how or "interrupted", resume_command(out_dir))
    except OSError as err:  # a full disk or a vanished directory: one line, no traceback
        log.error("run failed: %s", err)
        record_failure(f"{type(err).__name__}: {err}", before_run=False)
    except Exception as err:  # noqa: BLE001 - recorded as "failed"; a sweep goes on
        log.error("run failed: %s: %s (traceback in train.log)", type(err).__name__, one_line(err))
        log_to_file(traceback.format_exc())
        record_failure(f"{type(err).__name__}: {one_line(err)}", before_run=False)
    finally:
        close_loggers()
        if os.environ.get(RANK0_ENV) == str(os.getpid()):
            del os.environ[RANK0_ENV]  # only its own fit's workers may claim it
    if not written_by_this_run():
        record_failure(record.error or "the run ended without a record (a worker process died?)", before_run=False)
    if kept:  # the failure is reported, the finished run's record stays
        summary = build_summary("failed", config, {}, 0, time.time() - start,
                                error=f"{kept[0]} (resume failed; {summary_path} still holds the run's record)")
        log_to_file(f"[failed] resume failed: {kept[0]}; record kept: {summary_path}")
        return summary
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as err:  # the record could not be written: report it from memory
        summary = build_summary("failed", config, {}, 0, time.time() - start,
                                error=f"summary.json could not be written: {err}")
    log_to_file(f"[{summary['status']}] steps={summary['steps']} error={summary.get('error')} "
                f"record={summary_path}")
    return summary
