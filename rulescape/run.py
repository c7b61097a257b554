"""Build a run from a composed config and train it: datamodule -> network -> rule -> LightningModule ->
callbacks, loggers -> Trainer. Always leaves a summary.json with a status and closes the loggers."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from callbacks import CALLBACKS
from callbacks.interrupt_checkpoint import InterruptCheckpoint
from callbacks.stop_at_target import StopAtTarget
from callbacks.run_record import RunRecord, build_summary, write_summary
from datamodules import build_datamodule
from modules.lit_module import Diverged, RuleModule, build_optimizer
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import build_rule
from rulescape.errors import (EXIT_DIVERGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                              ConfigError)
from rulescape.loggers import build_loggers, close_loggers
from rulescape.quiet import quiet_third_party
from rulescape.checkpoint import check_checkpoint
from rulescape.validate import validate

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


def build_module(cfg: DictConfig, dm) -> RuleModule:
    """Datamodule -> network -> rule -> LightningModule, in the seeded order (init, then rule state)."""
    net = build_network(cfg, dm)
    rule = build_rule(cfg.rule.name, net, **group_params(cfg.rule, "name"))
    scheduler = build_optimizer(cfg.scheduler) if cfg.scheduler.get("_target_") else None
    config = OmegaConf.to_container(cfg, resolve=True)
    return RuleModule(net, rule, Objective(dm.loss, cfg.l2), build_optimizer(cfg.optimizer), scheduler,
                      seed=cfg.seed, config=config, clip_norm=cfg.clip_norm)


def build_callbacks(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    measurements = [CALLBACKS[name].from_config(cfg) for name in cfg.callbacks.enabled]
    stop = StopAtTarget.from_config(cfg)
    if stop is not None:  # before the measurements: they then record its stopping step as the final one
        measurements.insert(0, stop)
    last = out_dir / "checkpoints" / "last.ckpt"
    # no version counter: a run resumed into its own directory keeps updating last.ckpt
    checkpoint = ModelCheckpoint(dirpath=str(last.parent), save_last=True, save_top_k=0,
                                 every_n_train_steps=cfg.checkpoint_every or None, enable_version_counter=False)
    bar = [TQDMProgressBar(refresh_rate=25)] if cfg.trainer.get("enable_progress_bar", True) else []
    return [*measurements, checkpoint, InterruptCheckpoint(last), *bar]


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.rule.name}-{cfg.task.name}-s{cfg.seed}"


def train(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Train one run into out_dir and return its summary (also written to out_dir/summary.json).
    ConfigError propagates (nothing ran, but a "failed" summary names the error); every other outcome
    is recorded with a status."""
    quiet_third_party()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    summary_path.unlink(missing_ok=True)  # a stale record must never pass for this run's
    config = OmegaConf.to_container(cfg, resolve=False)
    start = time.time()

    def record_failure(error: str) -> None:
        if not summary_path.exists():
            write_summary(summary_path, build_summary("failed", config, {}, 0, time.time() - start, error=error))

    try:
        validate(cfg)
        config = OmegaConf.to_container(cfg, resolve=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build_datamodule(cfg.task.name, **group_params(cfg.task, "name", "alpha", "study"))
        module = build_module(cfg, dm)
        check_checkpoint(cfg.ckpt_path, config)
    except (ConfigError, ValueError, OmegaConfBaseException) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__  # one line, always
        record_failure(message)
        raise ConfigError(message) from err

    record = RunRecord(out_dir, config)
    try:
        trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True),
                             callbacks=[*build_callbacks(cfg, out_dir), record],
                             logger=build_loggers(cfg, out_dir, run_name(cfg)) or False,
                             default_root_dir=str(out_dir), use_distributed_sampler=False, max_epochs=-1)
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
    except Diverged as err:
        log.warning(str(err))
    except (KeyboardInterrupt, SystemExit) as err:
        log.warning("interrupted (%s); resume with ckpt_path=%s", type(err).__name__,
                    out_dir / "checkpoints" / "last.ckpt")
    except Exception as err:  # noqa: BLE001 - recorded as "failed"; a sweep goes on
        log.exception("run failed: %s", err)
        record_failure(f"{type(err).__name__}: {err}")
    finally:
        close_loggers()
    if not summary_path.exists():
        record_failure("the run ended without a record (a worker process died?)")
    return json.loads(summary_path.read_text())
