"""Loggers from `logger=`: wandb (online when logged in, offline otherwise), csv, none."""
from __future__ import annotations

import netrc
import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger

LOGGERS = ("wandb", "csv", "none")


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


def build_loggers(cfg, out_dir: Path, run_name: str) -> list[Logger]:
    name = cfg.logger.name
    if name == "none":
        return []
    if name == "csv":
        return [CSVLogger(save_dir=str(out_dir), name="", version="")]
    if name == "wandb":
        from pytorch_lightning.loggers import WandbLogger
        mode = wandb_mode(cfg.logger.mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        return [WandbLogger(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                            tags=list(cfg.logger.tags or []), name=run_name, save_dir=str(out_dir), mode=mode)]
    raise ValueError(f"unknown logger '{name}'; choose one of: {', '.join(LOGGERS)}")


def close_loggers() -> None:
    """Finish any open wandb run, so that the next job of a sweep starts clean."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()
