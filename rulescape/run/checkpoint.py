"""Checkpoints that cannot run code, and that are never left half-written.

Every checkpoint is read with `torch.load(weights_only=True)`: tensors, plain containers, numbers and
strings, plus the few classes in SAFE_GLOBALS. A pickle that names anything else (a `__reduce__` payload,
a foreign class) is refused with one line and never unpickled. Writes go to a temporary file that replaces
the old one only once complete, so a full disk leaves the previous good checkpoint.

Before resuming, `check_checkpoint` also checks that the checkpoint was made by the same run (RESUME_KEEPS)
and that the step budget reaches past it."""
from __future__ import annotations

import collections
import os
import pathlib
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from rulescape.errors import ConfigError

# Classes a rulescape checkpoint may contain besides what weights_only always allows (tensors, dicts, lists,
# numbers, strings, OrderedDict). Lightning's loops, callbacks' states and optimizer states need none today;
# add one here (with the reason) before a checkpoint needs it.
SAFE_GLOBALS: list = [collections.defaultdict, pathlib.PosixPath]

# Config keys that may differ on resume: they take effect from the resumed step on and are recorded in the
# new summary.json (budget, cadence of evaluation and measurements, logging, hardware, early stops). Every
# other key (seed, rule, task, model, optimizer, scheduler, l2, clip_norm, float64, ...) must equal the
# checkpoint's, or the resume is refused with one line naming the key.
RESUME_MAY_CHANGE = ("ckpt_path", "trainer", "eval_every", "checkpoint_every", "threads", "logger",
                     "callbacks", "curvature", "alignment", "stop_at_test_acc", "stop_at_train_acc",
                     "stop_at_train_loss", "stop_at_test_loss", "stop_at_train_acc_from",
                     "stop_at_train_loss_from", "stop_at_test_acc_from", "stop_at_test_loss_from",
                     "stop_check_every", "stop_wait_s", "stop_at_step_wait_s", "study_arm",
                     "task.eval_every", "task.curvature_every", "task.alignment_every")  # the task's cadences


def safe_load(path: str | Path, what: str = "ckpt_path") -> dict:
    """The checkpoint at path, loaded without running any code; ConfigError (one line) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}={str(path)!r}: no such file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused or unreadable: the same answer to a user
        text = str(err).lower()
        if "global" in text:  # "Unsupported global", "unsupported GLOBAL ... is blocked": a class or function
            raise ConfigError(f"{what}={str(path)!r} is refused: it holds objects other than tensors and plain "
                              "data (loading it could run code)") from None
        raise ConfigError(f"{what}={str(path)!r} is not a readable checkpoint ({type(err).__name__}); "
                          "it may be truncated or corrupt") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{what}={str(path)!r} is not a rulescape checkpoint (not a dict)")
    return ckpt


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to path.tmp, then rename over path: path is either the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with safe loading (weights_only=True) and atomic saving."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return safe_load(path)


def flat(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


def may_differ(key: str, keys) -> bool:
    """Whether a flat key is one of keys or lies below one of them."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def config_mismatch(mine: dict, theirs: dict, may_change=()) -> str | None:
    """The first flat key (kind of run first: rule, task, network; then top-level keys before nested ones)
    whose value differs between two configs, a key only one of them has included; keys in may_change (and
    below them) aside. None when they agree."""
    a, b = flat(mine), flat(theirs)
    kind = ("rule.name", "task.name", "model.hidden_size", "model.dale", "float64")
    for key in sorted(set(a) | set(b), key=lambda k: (k not in kind, k.count("."), k)):
        if may_differ(key, may_change):
            continue
        if key not in a or key not in b or a[key] != b[key] or type(a[key]) is not type(b[key]):
            if isinstance(a.get(key), (int, float)) and isinstance(b.get(key), (int, float)) \
                    and not isinstance(a.get(key), bool) and not isinstance(b.get(key), bool) and a[key] == b[key]:
                continue  # 1 and 1.0: one number
            return key
    return None


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def progress_problem(node, where: str) -> str | None:
    """Lightning's loop progress counters (`*progress*` entries of `loops`) are nested dicts of counts
    (and flags such as is_last_batch)."""
    if isinstance(node, dict):
        for key, value in node.items():
            problem = progress_problem(value, f"{where}.{key}")
            if problem:
                return problem
        return None
    return None if is_count(node) or isinstance(node, bool) else \
        f"{where} is {type(node).__name__} {node!r:.40}, not a count"


def extra_state_problem(got, want, where: str) -> str | None:
    """A module's extra state in the checkpoint has this run's structure: the same type, and for a dict the
    same keys, recursively (values such as a rule's seed and step)."""
    if type(got) is not type(want):
        return f"{where} is {type(got).__name__}; this run's is {type(want).__name__}"
    if isinstance(want, dict):
        if set(got) != set(want):
            return f"{where} has keys {sorted(map(str, got))}; this run's has {sorted(map(str, want))}"
        for key, value in want.items():
            problem = extra_state_problem(got[key], value, f"{where}[{key!r}]")
            if problem:
                return problem
    return None


def optimizer_state_problem(saved: dict, optimizer, k: int) -> str | None:
    """What in one saved optimizer state does not fit `optimizer` (parameter count, state shapes), or None."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    opt_state, groups = saved.get("state"), saved.get("param_groups")
    if not isinstance(opt_state, dict) or not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return f"optimizer_states[{k}] has no state / param_groups"
    indices = [i for g in groups for i in (g.get("params") or [])]
    if sorted(indices) != list(range(len(params))) or len(groups) != len(optimizer.param_groups):
        return f"its optimizer holds {len(indices)} parameters; this run's holds {len(params)}"
    for index, entry in opt_state.items():
        if not is_count(index) or index >= len(params) or not isinstance(entry, dict):
            return f"optimizer state {index!r} names no parameter"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != params[index].shape:
                return (f"optimizer state {index}.{name} is {tuple(value.shape)}; its parameter is "
                        f"{tuple(params[index].shape)}")
    return None


def contents_problem(ckpt: dict, module) -> str | None:
    """What in the checkpoint does not fit this run's module, optimizer and Lightning's own state (keys,
    shapes, dtypes, types), or None. Checked before resuming: a checkpoint that fits loads."""
    for key in ("global_step", "epoch"):
        if not is_count(ckpt.get(key)):
            return f"{key} is {ckpt.get(key)!r:.40}, not a step count"
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        return "it has no state_dict"
    expected = module.state_dict()
    if set(state) != set(expected):
        extra, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
        return f"its state_dict has {'extra ' + ', '.join(extra) if extra else ''}" \
               f"{'; ' if extra and missing else ''}{'no ' + ', '.join(missing) if missing else ''}"
    for name, want in expected.items():
        got = state[name]
        if not isinstance(want, torch.Tensor):  # a module's get_extra_state(), e.g. a keyed-draw rule's key
            problem = extra_state_problem(got, want, f"state_dict[{name!r}]")
            if problem:
                return problem
            continue
        if not isinstance(got, torch.Tensor):
            return f"state_dict[{name!r}] is {type(got).__name__}, not a tensor"
        if got.shape != want.shape or got.dtype != want.dtype:
            return (f"state_dict[{name!r}] is {tuple(got.shape)} {got.dtype}; this run's is "
                    f"{tuple(want.shape)} {want.dtype}")
    built = module.configure_optimizers()
    entries = built if isinstance(built, list) else [built]  # a rule that learns adds its own optimizer
    optimizers = [e["optimizer"] if isinstance(e, dict) else e for e in entries]
    n_schedulers = sum(isinstance(e, dict) and "lr_scheduler" in e for e in entries)
    states = ckpt.get("optimizer_states")
    if not isinstance(states, list) or len(states) != len(optimizers) or not all(isinstance(s, dict) for s in states):
        return ("optimizer_states is not one optimizer's state" if len(optimizers) == 1 else
                f"optimizer_states is not {len(optimizers)} optimizers' states (the network's and the rule's)")
    for k, (optimizer, saved) in enumerate(zip(optimizers, states)):
        problem = optimizer_state_problem(saved, optimizer, k)
        if problem:
            return problem
    schedulers = ckpt.get("lr_schedulers")
    if not isinstance(schedulers, list) or len(schedulers) != n_schedulers \
            or not all(isinstance(s, dict) for s in schedulers):
        return f"lr_schedulers holds {schedulers!r:.40}; this run has {n_schedulers} scheduler(s)"
    loops, callbacks = ckpt.get("loops"), ckpt.get("callbacks")
    if not isinstance(loops, dict) or not isinstance(loops.get("fit_loop"), dict):
        return "it has no fit loop state (loops.fit_loop)"
    for loop_name, loop in loops.items():
        if not isinstance(loop, dict):
            return f"loops.{loop_name} is {type(loop).__name__}, not a dict"
        for key, value in loop.items():
            if "progress" in key:
                problem = progress_problem(value, f"loops.{loop_name}.{key}")
                if problem:
                    return problem
    if not isinstance(callbacks, dict) or not all(isinstance(v, dict) for v in callbacks.values()):
        return "its callbacks' states are not dicts"
    return None


def check_checkpoint(path: str | None, config: dict, module=None) -> dict | None:
    """Refuse (ConfigError, one line) a checkpoint that is unsafe, unreadable, not rulescape's, made by a
    different run, already past this run's max_steps, or (given this run's module) whose contents do not fit
    it. Returns the loaded checkpoint (None without one)."""
    if path is None:
        return None
    ckpt = safe_load(path)
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(saved, dict) or not saved:
        raise ConfigError(f"ckpt_path={path!r} is not a rulescape checkpoint (it stores no run config)")
    key = config_mismatch(config, saved, RESUME_MAY_CHANGE)
    if key is not None:
        mine, theirs = flat(config), flat(saved)
        raise ConfigError(f"ckpt_path={path!r} was saved with {key}={theirs.get(key, '<absent>')!r} but this run "
                          f"has {key}={mine.get(key, '<absent>')!r}; a resumed run keeps its {key} "
                          "(start a new run to change it)")
    step = ckpt.get("global_step", 0)
    max_steps = flat(config).get("trainer.max_steps")
    if isinstance(max_steps, int) and isinstance(step, int) and 0 < max_steps < step:
        raise ConfigError(f"trainer.max_steps={max_steps} is below the checkpoint's step {step} "
                          f"(ckpt_path={path!r}); give trainer.max_steps>={step}")
    if module is not None:
        problem = contents_problem(ckpt, module)
        if problem:
            raise ConfigError(f"ckpt_path={path!r} does not fit this run: {problem}")
    return ckpt
