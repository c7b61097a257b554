"""Config checks that a schema cannot say (rulescape/schema.py enforces types, booleans and unknown keys):
ranges, choices taken from the registries, cross-field rules and a memory estimate. They run before any
work; each failure is one line naming the key, the value and what is allowed (raised as ConfigError)."""
from __future__ import annotations

import math
import os
from numbers import Integral, Real

from omegaconf import DictConfig, ListConfig

from rulescape.errors import ConfigError

CURVATURE_BACKENDS = ("lanczos", "pyhessian")
CURVATURE_PARAMS = ("recurrent", "all")


def lookup(config, key: str):
    """config["a"]["b"] for key "a.b" in a DictConfig or plain nested dicts; None where a part is missing."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return None
        node = node[part]
    return node


def require_choice(cfg, key: str, allowed) -> None:
    value = lookup(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def require_int(cfg, key: str, minimum: int, optional: bool = False) -> None:
    value = lookup(cfg, key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be an integer >= {minimum}")


def require_real(cfg, key: str, low: float, high: float = math.inf, *, low_open: bool = False,
                 optional: bool = False) -> None:
    value = lookup(cfg, key)
    if value is None and optional:
        return
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        upper = "inf)" if high == math.inf else f"{high:g}]"
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a finite number in {bracket}{low:g}, {upper}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad value found."""
    from callbacks import CALLBACKS
    from datamodules import TASKS
    from modules.rnn import ACTIVATIONS
    from modules.rules import RULES
    from rulescape.loggers import LOGGERS

    require_choice(cfg, "rule.name", sorted(RULES))
    require_choice(cfg, "task.name", sorted(TASKS))
    require_choice(cfg, "logger.name", LOGGERS)
    require_choice(cfg, "model.activation", sorted(ACTIVATIONS))
    for name in cfg.callbacks.enabled:
        if name not in CALLBACKS:
            raise ConfigError(f"callbacks.enabled: {name!r} is not a measurement; choose from: {', '.join(CALLBACKS)}")
    require_int(cfg, "seed", 0)
    if cfg.seed > MAX_SEED:
        raise ConfigError(f"seed={cfg.seed} is not allowed; it must be an integer in [0, {MAX_SEED}]")
    require_real(cfg, "optimizer.lr", 0.0, low_open=True)
    require_real(cfg, "l2", 0.0)
    for key in ("momentum", "weight_decay", "dampening", "eps"):
        if lookup(cfg, f"optimizer.{key}") is not None:
            require_real(cfg, f"optimizer.{key}", 0.0)
    require_int(cfg, "trainer.max_steps", 1)
    import torch
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator!r} but no CUDA device is visible; "
                          "use trainer=cpu (or trainer=ddp trainer.accelerator=cpu trainer.strategy=ddp_spawn)")
    require_int(cfg, "model.hidden_size", 1)
    require_int(cfg, "model.n_cell_types", 1)
    require_real(cfg, "model.alpha", 0.0, 1.0, low_open=True)
    require_real(cfg, "model.noise_std", 0.0)
    require_int(cfg, "task.batch_size", 1)
    require_int(cfg, "task.train_size", 1)
    require_int(cfg, "task.test_size", 1)
    require_real(cfg, "task.noise", 0.0, optional=True)
    require_real(cfg, "task.test_noise", 0.0, optional=True)
    devices = lookup(cfg, "trainer.devices")
    n_devices = devices if isinstance(devices, int) else len(devices) if isinstance(devices, (list, ListConfig)) else 1
    if n_devices > 1 and cfg.task.batch_size % n_devices:
        raise ConfigError(f"task.batch_size={cfg.task.batch_size} is not allowed with trainer.devices={n_devices}; "
                          "the global batch is split over devices, so it must be divisible by their number")
    if cfg.task.batch_size > cfg.task.train_size:
        raise ConfigError(f"task.batch_size={cfg.task.batch_size} is not allowed; it must be <= "
                          f"task.train_size={cfg.task.train_size}")
    require_int(cfg, "eval_every", 0)
    require_int(cfg, "checkpoint_every", 0)
    require_int(cfg, "threads", 0)
    require_int(cfg, "curvature.every_n_steps", 0)
    require_choice(cfg, "curvature.backend", CURVATURE_BACKENDS)
    require_choice(cfg, "curvature.params", CURVATURE_PARAMS)
    require_int(cfg, "curvature.k", 1)
    require_int(cfg, "curvature.batch_size", 1)
    require_real(cfg, "curvature.tol", 0.0, low_open=True)
    require_int(cfg, "curvature.max_iter", cfg.curvature.k if isinstance(cfg.curvature.k, int) else 1)
    require_int(cfg, "curvature.trace_samples", 1)
    require_int(cfg, "alignment.every_n_steps", 0)
    require_real(cfg, "stop_at_train_acc", 0.0, 1.0, optional=True)
    require_real(cfg, "stop_at_test_acc", 0.0, 1.0, optional=True)
    require_real(cfg, "stop_at_train_loss", 0.0, optional=True)
    require_real(cfg, "stop_at_test_loss", 0.0, optional=True)
    require_int(cfg, "stop_check_every", 1)
    require_real(cfg, "stop_wait_s", 0.0)
    require_real(cfg, "clip_norm", 0.0, low_open=True, optional=True)
    from callbacks.stop_at_target import requested_targets
    stops = requested_targets(cfg)
    if len(stops) > 1:
        raise ConfigError(f"at most one stop target at a time; got {', '.join(stops)}")
    if stops and stops[0].endswith("_acc") and not getattr(TASKS[cfg.task.name], "has_accuracy", True):
        value = lookup(cfg, stops[0]) if lookup(cfg, stops[0]) is not None else lookup(cfg, f"{stops[0]}_from")
        raise ConfigError(f"{stops[0]}={value} is not allowed on task.name={cfg.task.name!r}: a regression task "
                          f"has no accuracy; use {stops[0].replace('_acc', '_loss')}")
    if cfg.rule.name == "tbptt":
        require_int(cfg, "rule.window", 1)
    if cfg.rule.name == "rflo":
        require_real(cfg, "rule.feedback_scale", 0.0, low_open=True)
    if cfg.rule.name == "bptt_scaled":
        if lookup(cfg, "rule.rho") is None and lookup(cfg, "rule.rho_from") is None:
            raise ConfigError("rule=bptt_scaled needs rule.rho=<number> or rule.rho_from=<run dir>; both are null")
        require_real(cfg, "rule.rho", 0.0, low_open=True, optional=True)
        if lookup(cfg, "rule.rho") is None:
            check_rho_from(cfg.rule.rho_from, lookup(cfg, "rule.rho_wait_s") or 0)
    check_memory(cfg)


MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
BYTES_PER_WEIGHT_COPY = 16  # weights, gradient estimate, optimizer state and a rule's per-synapse trace (x4 bytes)


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on this OS
        return None


def check_memory(cfg) -> None:
    """Refuse a network whose recurrent weights alone (a few copies of hidden_size^2) exceed this machine's
    memory; a lower bound, so it never refuses a run that would fit."""
    hidden = cfg.model.hidden_size
    need = BYTES_PER_WEIGHT_COPY * hidden * hidden * (2 if cfg.float64 else 1)
    have = memory_bytes()
    if have and need > have:
        raise ConfigError(f"model.hidden_size={hidden} is not allowed here; its weights alone need about "
                          f"{need / 2**30:.3g} GiB and this machine has {have / 2**30:.3g} GiB")


def check_rho_from(run_dir: str, wait_s: float = 0) -> None:
    """rule.rho_from names a run directory whose summary.json holds a finite number rho_mean. A glob, or a
    record to wait for (rule.rho_wait_s > 0), may match only later: the rule itself looks, waits and refuses
    (modules/rules/bptt_scaled.py)."""
    import glob
    import json
    from pathlib import Path
    if wait_s or glob.has_magic(str(run_dir)):
        return
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"rule.rho_from={run_dir!r}: no summary.json in that directory")
    try:
        rho = json.loads(path.read_text()).get("rho_mean")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"rule.rho_from={run_dir!r}: {path} is not a readable run record "
                          f"({type(err).__name__})") from None
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho) or rho <= 0:
        raise ConfigError(f"rule.rho_from={run_dir!r}: {path} has rho_mean={rho!r}, not a positive number "
                          "(was alignment measured in that run?)")


def settle(cfg) -> list[str]:
    """Values that take effect differently from what was asked, changed in cfg so that the record says what
    was used; returns a line for each (logged). Today: a curvature batch larger than the training set is the
    whole training set (task=pattern's 64 trials under the default 256)."""
    notes = []
    if cfg.curvature.batch_size > cfg.task.train_size:
        notes.append(f"curvature.batch_size={cfg.curvature.batch_size} > task.train_size={cfg.task.train_size}: "
                     f"using (and recording) {cfg.task.train_size}")
        cfg.curvature.batch_size = cfg.task.train_size
    return notes
