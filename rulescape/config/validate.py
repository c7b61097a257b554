"""Config checks between keys (each key's own range and choices are declared in rulescape/config/schema.py and
checked there): batch against devices and training set, Lanczos sizes against the network, stop targets,
neurogym's timing keywords, and a memory estimate covering weights, data sets and the Lanczos basis. They
run before any work; each failure is one line naming the key, the value and what is allowed (ConfigError)."""
from __future__ import annotations

import math
import os

from omegaconf import DictConfig, ListConfig, OmegaConf

from rulescape.errors import ConfigError


def lookup(config, key: str):
    """config["a"]["b"] for key "a.b" in a DictConfig or plain nested dicts; None where a part is missing."""
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return None
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad combination found (cfg has passed schema.check_schema)."""
    from datamodules import TASKS
    import torch
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator!r} but no CUDA device is visible; "
                          "use trainer=cpu (or trainer=ddp trainer.accelerator=cpu trainer.strategy=ddp_spawn)")
    devices = lookup(cfg, "trainer.devices")
    n_devices = devices if isinstance(devices, int) else len(devices) if isinstance(devices, (list, ListConfig)) else 1
    if n_devices > 1 and cfg.task.batch_size % n_devices:
        raise ConfigError(f"task.batch_size={cfg.task.batch_size} is not allowed with trainer.devices={n_devices}; "
                          "the global batch is split over devices, so it must be divisible by their number")
    if cfg.task.batch_size > cfg.task.train_size:
        raise ConfigError(f"task.batch_size={cfg.task.batch_size} is not allowed; it must be <= "
                          f"task.train_size={cfg.task.train_size}")
    if cfg.curvature.max_iter < cfg.curvature.k:
        raise ConfigError(f"curvature.max_iter={cfg.curvature.max_iter} is not allowed; it must be an integer "
                          f">= {cfg.curvature.k} (curvature.k)")
    if cfg.curvature.k > cfg.model.hidden_size ** 2:  # W_h's size: the smallest operator Lanczos runs on
        raise ConfigError(f"curvature.k={cfg.curvature.k} is not allowed with model.hidden_size="
                          f"{cfg.model.hidden_size}; the Hessian has {cfg.model.hidden_size ** 2} eigenvalues")
    from callbacks.stop_at_target import requested_targets
    stops = requested_targets(cfg)
    if len(stops) > 1:
        raise ConfigError(f"at most one stop target at a time; got {', '.join(stops)}")
    if stops and stops[0].endswith("_acc") and not getattr(TASKS[cfg.task.name], "has_accuracy", True):
        value = lookup(cfg, stops[0]) if lookup(cfg, stops[0]) is not None else lookup(cfg, f"{stops[0]}_from")
        raise ConfigError(f"{stops[0]}={value} is not allowed on task.name={cfg.task.name!r}: a regression task "
                          f"has no accuracy; use {stops[0].replace('_acc', '_loss')}")
    if cfg.rule.name == "bptt_scaled":
        if lookup(cfg, "rule.rho") is None and lookup(cfg, "rule.rho_from") is None:
            raise ConfigError("rule=bptt_scaled needs rule.rho=<number> or rule.rho_from=<run dir>; both are null")
        if lookup(cfg, "rule.rho") is None:
            check_rho_from(cfg.rule.rho_from, lookup(cfg, "rule.rho_wait_s") or 0)
    if cfg.task.name == "neurogym":
        check_env_keywords(cfg.task)
    check_finite(cfg)
    check_cell_types(cfg)
    check_memory(cfg)
    check_trial_length(cfg)


def check_finite(cfg) -> None:
    """Every number anywhere in the config is finite, a rule's own untyped parameters included (rule.x=inf
    used to run and diverge at step 0)."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation only a run resolves: its own check says so
        return
    for path, value in numbers(plain, ""):
        if not math.isfinite(value):
            raise ConfigError(f"{path.lstrip('.')}={value!r} is not allowed; every number must be finite")


def check_cell_types(cfg) -> None:
    """With Dale's law every cell type has a unit (the first 80% of units excitatory, the rest inhibitory:
    model.hidden_size=1 has no inhibitory unit and used to diverge at step 0)."""
    if not lookup(cfg, "model.dale"):
        return
    from modules.rnn import cell_types
    n, k = int(cfg.model.hidden_size), int(lookup(cfg, "model.n_cell_types") or 2)
    counts = cell_types(n, k).bincount(minlength=k).tolist()
    if min(counts) == 0:
        smallest = next(m for m in range(n, 10 * k + 10) if min(cell_types(m, k).bincount(minlength=k).tolist()) > 0)
        raise ConfigError(f"model.hidden_size={n} is not allowed with model.dale=true and model.n_cell_types={k}: "
                          f"every cell type needs a unit (units per type: {counts}); give model.hidden_size>={smallest}")


MAX_TRIAL_STEPS = 100_000  # a hand-written time loop this long takes hours per batch and its graph tens of GB


def check_trial_length(cfg) -> None:
    """A trial of at most MAX_TRIAL_STEPS time steps (its timing / task.dt): a neurogym timing keyword of
    10^8 ms used to be killed by the OOM killer, with no line and no record."""
    steps, _ = trial_steps(cfg.task)
    if steps > MAX_TRIAL_STEPS:
        raise ConfigError(f"task={cfg.task.name}: a trial of {steps:.3g} time steps (its timing / task.dt) is not "
                          f"allowed; at most {MAX_TRIAL_STEPS} (shorten the timing or raise task.dt)")


def check_env_keywords(task) -> None:
    """task.kwargs / task.test_kwargs (neurogym's own keywords): every number finite, noise levels and the
    durations under `timing` (a number, or a distribution such as [uniform, [a, b]]) not negative."""
    for name in ("kwargs", "test_kwargs"):
        for path, value in numbers(to_plain(lookup(task, name)) or {}, f"task.{name}"):
            if not math.isfinite(value):
                raise ConfigError(f"{path}={value!r} is not allowed; it must be a finite number")
            if value < 0 and (f"task.{name}.timing." in path or path.endswith(".sigma")):
                raise ConfigError(f"{path}={value!r} is not allowed; durations and noise levels must be >= 0")


def to_plain(node):
    return OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node


def numbers(node, path: str):
    """(dotted path, number) for every number inside nested dicts and lists (booleans and strings skipped)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, float(node)


def trial_steps(task) -> tuple[float, int]:
    """(steps per trial T, input channels) as the task will build them (a lower bound where unknown)."""
    get = lambda key, default=0.0: lookup(task, key) if lookup(task, key) is not None else default  # noqa: E731
    if task.name == "dms":
        delay = max([get("delay"), *(get("shift_delays", []) or [])])
        return (get("fixation") + get("sample") + delay + get("test")) / get("dt", 1.0), int(get("n_stimuli", 2))
    if task.name == "pattern":
        return get("duration") / get("dt", 1.0), int(get("n_inputs", 1))
    if task.name == "seqmnist":
        return 28.0, 28
    if task.name == "neurogym" and get("T", None) is None:  # the longest trial its timing keywords allow
        timings = [to_plain(lookup(task, f"{name}.timing")) for name in ("kwargs", "test_kwargs")]
        longest = max([sum(max((v for _, v in numbers(period, "")), default=0.0) for period in t.values())
                       for t in timings if isinstance(t, dict)] + [0.0])
        return longest / get("dt", 100.0), 1
    return float(get("T", 0)), 1


BYTES_PER_WEIGHT_COPY = 16  # weights, gradient estimate, optimizer state and a rule's per-synapse trace (x4 bytes)


def memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on this OS
        return None


def memory_parts(cfg) -> dict[str, float]:
    """{the keys that size it: bytes} for what a run cannot do without: recurrent weights (a few copies of
    N^2), the data sets (training, test and a shifted test set where the task makes one; T steps of inputs,
    target and loss mask each) and the Lanczos basis (max_iter vectors of N^2). Lower bounds, so the check
    never refuses a run that would fit."""
    n, width = cfg.model.hidden_size, (8 if cfg.float64 else 4)
    steps, inputs = trial_steps(cfg.task)
    shifted = any(lookup(cfg.task, k) is not None for k in ("shift_noise", "shift_delays"))
    trials = cfg.task.train_size + cfg.task.test_size * (2 if shifted else 1)
    parts = {f"model.hidden_size={n}": BYTES_PER_WEIGHT_COPY // 4 * width * n * n,
             f"task={cfg.task.name} with task.train_size={cfg.task.train_size}, task.test_size={cfg.task.test_size} "
             f"and T={steps:.3g} steps per trial (its timing / task.dt)": 4.0 * trials * steps * (inputs + 2)}
    if cfg.curvature.every_n_steps and "curvature" in cfg.callbacks.enabled and cfg.curvature.backend == "lanczos":
        parts[f"curvature.max_iter={cfg.curvature.max_iter} Lanczos vectors at model.hidden_size={n}"] = \
            width * min(cfg.curvature.max_iter, n * n) * n * n
    return parts


def check_memory(cfg) -> None:
    """Refuse a run that needs more than this machine's memory (memory_parts), naming what takes most."""
    parts = memory_parts(cfg)
    need, have = sum(parts.values()), memory_bytes()
    if have and need > have:
        cause = max(parts, key=parts.get)
        raise ConfigError(f"{cause} is not allowed here: it needs about {parts[cause] / 2**30:.3g} GiB of the run's "
                          f"{need / 2**30:.3g} GiB, and this machine has {have / 2**30:.3g} GiB")


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
