"""Checks a checkpoint before resuming from it: readable, a rulescape checkpoint, and made by the same
kind of run (rule, task, network sizes). One clear line otherwise."""
from __future__ import annotations

from pathlib import Path

import torch

from rulescape.errors import ConfigError
from rulescape.validate import lookup

# config keys that must match between the checkpoint and the run that resumes it
MUST_MATCH = ("rule.name", "task.name", "model.hidden_size", "model.activation", "model.dale", "float64")


def check_checkpoint(path: str | None, config: dict) -> None:
    if path is None:
        return
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ckpt_path={path!r}: no such file")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem to a user
        raise ConfigError(f"ckpt_path={path!r} is not a readable checkpoint ({type(err).__name__}); "
                          "it may be truncated or corrupt") from err
    saved = (ckpt.get("hyper_parameters") or {}).get("config") if isinstance(ckpt, dict) else None
    if not saved:
        raise ConfigError(f"ckpt_path={path!r} is not a rulescape checkpoint (it stores no run config)")
    for key in MUST_MATCH:
        if lookup(saved, key) != lookup(config, key):
            raise ConfigError(f"ckpt_path={path!r} was saved with {key}={lookup(saved, key)!r} but this run "
                              f"has {key}={lookup(config, key)!r}")
