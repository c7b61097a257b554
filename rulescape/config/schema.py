"""Every config key declared once: one dataclass per config section (OmegaConf structured configs), one field
per key, whose `key(...)` metadata says what values it takes. `check_schema` merges a composed config into
them (types, booleans, unknown keys) and `check_values` checks every value against its declaration (ranges,
choices, path lengths; a number must also be finite), before anything runs. A key's default and help are its
line in the YAML under conf/ (the comment beside it); docs/configuration.md and `train.py --help` are
generated from both (tools/gen_config_docs.py). rulescape/config/validate.py keeps the cross-field rules.

Open and closed sections:
- Closed (an unknown key is refused): the top level, model, optimizer (per _target_), scheduler (per
  _target_), curvature, alignment, callbacks, logger; trainer accepts what pl.Trainer accepts.
- rule and task are per-name dataclasses (RULE_SCHEMAS, TASK_SCHEMAS); a rule or task without one is open
  (its keys pass to the rule or datamodule, which refuses what it does not take, in one line).
- A key that a YAML under conf/ declares but no dataclass does yet is accepted untyped, so adding a key to a
  YAML never breaks a run. To type and check it, add one line to the section's dataclass, e.g.
      e_ratio: Optional[float] = key(None, "[0, inf)")
  and a new rule or task gets its dataclass (subclass RuleConfig / TaskConfig) and a *_SCHEMAS entry."""
from __future__ import annotations

import importlib
import inspect
import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rulescape.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
INT_MAX = 2**31 - 1     # no count, size or step above int32: torch and numpy index with it, seeds aside
SEED_MAX = 2**32 - 1    # numpy's and Lightning's seed range
PATH_MAX = 4096         # Linux's limit on a path; NAME_MAX (255) on each of its parts
NAME_MAX = 255


def key(default: Any = None, range: str | None = None, choices: Any = None, path: bool = False) -> Any:
    """A field with its allowed values: `range` an interval "[0, 1]", "(0, inf)" (ints without one: [0,
    INT_MAX]; numbers always finite), `choices` a tuple or "module:REGISTRY" (read when checked), `path`
    a file or directory name (length-checked). A list's elements are each checked."""
    meta = {"range": range, "choices": choices, "path": path}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE, NONNEGATIVE, UNIT = "(0, inf)", "[0, inf)", "[0, 1]"
COUNT = f"[1, {INT_MAX}]"


@dataclass
class ModelConfig:
    hidden_size: int = key(128, COUNT)          # validate.check_memory bounds it by this machine
    alpha: float = key(0.2, "(0, 1]")
    activation: str = key("relu", choices="modules.rnn:ACTIVATIONS")
    g: float = key(1.0, "[0, 1e3]")
    bias: bool = True
    noise_std: float = key(0.0, NONNEGATIVE)
    dale: bool = False
    n_cell_types: int = key(2, COUNT)
    readout_scale: float = key(0.1, NONNEGATIVE)


@dataclass
class RuleConfig:
    name: str = key("bptt", choices="modules.rules:RULES")


@dataclass
class TbpttRule(RuleConfig):
    window: int = key(10, COUNT)


@dataclass
class RfloRule(RuleConfig):
    feedback_scale: float = key(0.3, POSITIVE)
    feedback_norm: str = key("readout", choices=("readout", "fixed"))


@dataclass
class BpttScaledRule(RuleConfig):
    rho: Optional[float] = key(None, POSITIVE)
    rho_from: Optional[str] = key(None, path=True)
    rho_mode: str = key("mean", choices=("mean", "history"))
    rho_wait_s: float = key(0.0, NONNEGATIVE)


@dataclass
class NodePerturbationRule(RuleConfig):
    sigma: float = key(1e-2, POSITIVE)


@dataclass
class RtrlRule(RuleConfig):
    max_influence_mb: float = key(16, POSITIVE)
    batch_size: int = key(64, COUNT)


@dataclass
class LearningRuleConfig(RuleConfig):
    """A rule that learns (modules/rules/base.py): its own parameters' optimizer and learning rate."""
    lr: float = key(0.1, NONNEGATIVE)
    optimizer: str = key("sgd", choices="modules.rules.base:AUX_OPTIMIZERS")


@dataclass
class KolenPollackRule(LearningRuleConfig):
    decay: float = key(0.0, NONNEGATIVE)


@dataclass
class KernlRule(LearningRuleConfig):
    lr: float = key(1e-3, NONNEGATIVE)
    optimizer: str = key("adam", choices="modules.rules.base:AUX_OPTIMIZERS")
    sigma: float = key(1e-3, POSITIVE)


@dataclass
class DniRule(LearningRuleConfig):
    window: int = key(5, COUNT)
    lr: float = key(1e-3, NONNEGATIVE)


@dataclass
class ModpropRule(RuleConfig):
    mu: float = key(0.25, NONNEGATIVE)


RULE_SCHEMAS = {"bptt": RuleConfig, "eprop": RuleConfig, "mdgl": RuleConfig, "rflo": RfloRule, "uoro": RuleConfig,
                "tbptt": TbpttRule, "bptt_scaled": BpttScaledRule, "node_perturbation": NodePerturbationRule,
                "rtrl": RtrlRule, "kolen_pollack": KolenPollackRule, "kf_rtrl": RuleConfig,
                "kernl": KernlRule, "dni": DniRule,
                "modprop": ModpropRule}


@dataclass
class TaskConfig:
    name: str = key("dms", choices="datamodules:TASKS")
    alpha: float = key(0.2, "(0, 1]")
    lr: float = key(0.1, POSITIVE)
    max_steps: int = key(3000, COUNT)
    l2: float = key(0.0, NONNEGATIVE)
    eval_every: int = key(200)
    curvature_every: int = key(500)
    alignment_every: int = key(50)
    train_size: int = key(256, COUNT)
    test_size: int = key(1024, COUNT)
    noise: Optional[float] = key(None, NONNEGATIVE)
    test_noise: Optional[float] = key(None, NONNEGATIVE)
    batch_size: int = key(64, COUNT)
    seed: int = key(0, f"[0, {SEED_MAX}]")
    study: Any = None       # the task's study settings (conf/experiment/study_<task>.yaml reads them)


@dataclass
class DmsTask(TaskConfig):
    n_stimuli: int = key(2, f"[2, {INT_MAX}]")
    dt: float = key(20.0, POSITIVE)
    fixation: float = key(100.0, NONNEGATIVE)
    sample: float = key(200.0, NONNEGATIVE)
    delay: float = key(500.0, NONNEGATIVE)
    test: float = key(200.0, NONNEGATIVE)
    response_steps: int = key(1, COUNT)
    amplitude: float = key(1.0, NONNEGATIVE)
    shift_noise: Optional[float] = key(None, NONNEGATIVE)
    shift_delays: Optional[List[float]] = key(None, NONNEGATIVE)


@dataclass
class PatternTask(TaskConfig):
    dt: float = key(20.0, POSITIVE)
    duration: float = key(1000.0, POSITIVE)
    periods: List[float] = key([1000.0, 500.0, 333.0, 200.0], POSITIVE)
    amplitude_range: List[float] = key([0.5, 2.0], NONNEGATIVE)
    n_inputs: int = key(10, COUNT)
    shift_noise: Optional[float] = key(None, NONNEGATIVE)


@dataclass
class SeqmnistTask(TaskConfig):
    source: str = key("mlxtend5k", choices=("mlxtend5k", "torchvision"))
    data_dir: str = key("data", path=True)


@dataclass
class NeurogymTask(TaskConfig):
    env: str = "DelayMatchSample-v0"
    dt: float = key(100.0, POSITIVE)
    kwargs: Any = None       # the env's own keywords; their timing is checked in validate.py
    test_kwargs: Any = None
    T: Optional[int] = key(None, COUNT)
    loss_on: str = key("decision", choices=("decision", "all"))


TASK_SCHEMAS = {"dms": DmsTask, "pattern": PatternTask, "seqmnist": SeqmnistTask, "neurogym": NeurogymTask}


@dataclass
class SgdOptimizer:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = key(0.1, POSITIVE)
    momentum: float = key(0.0, NONNEGATIVE)
    dampening: float = key(0.0, NONNEGATIVE)
    weight_decay: float = key(0.0, NONNEGATIVE)
    nesterov: bool = False


@dataclass
class AdamOptimizer:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = key(0.003, POSITIVE)
    betas: List[float] = key([0.9, 0.999], "[0, 1)")
    eps: float = key(1e-8, NONNEGATIVE)
    weight_decay: float = key(0.0, NONNEGATIVE)
    amsgrad: bool = False


OPTIMIZER_SCHEMAS = {"torch.optim.SGD": SgdOptimizer, "torch.optim.Adam": AdamOptimizer}


@dataclass
class StepLRScheduler:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = key(200, COUNT)
    gamma: float = key(0.8, POSITIVE)


SCHEDULER_SCHEMAS = {"torch.optim.lr_scheduler.StepLR": StepLRScheduler}


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1           # an int, a list of device indices or "auto"
    max_steps: int = key(3000, COUNT)
    log_every_n_steps: int = key(1, COUNT)
    enable_checkpointing: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: Any = False  # bool or "warn"


LOGGERS = ("wandb", "csv", "none")  # logger=: the names rulescape/run/loggers.py builds


@dataclass
class LoggerConfig:
    name: str = key("none", choices=tuple(sorted(LOGGERS)))


@dataclass
class WandbLoggerConfig(LoggerConfig):
    project: str = "rulescape"
    entity: Optional[str] = None
    mode: str = key("auto", choices=("auto", "online", "offline", "disabled"))
    group: Optional[str] = None
    tags: List[str] = key([])


LOGGER_SCHEMAS = {"wandb": WandbLoggerConfig, "csv": LoggerConfig, "none": LoggerConfig}


@dataclass
class CallbacksConfig:
    enabled: List[str] = key(["generalization", "curvature", "alignment", "theory"], choices="callbacks:CALLBACKS")


@dataclass
class CurvatureConfig:
    every_n_steps: int = key(500)
    params: str = key("recurrent", choices=("recurrent", "all"))
    k: int = key(1, "[1, 1000]")               # Lanczos keeps max_iter vectors: a few leading eigenvalues
    backend: str = key("lanczos", choices=("lanczos", "pyhessian"))
    batch_size: int = key(256, COUNT)
    tol: float = key(1e-4, POSITIVE)
    warm_start: bool = True
    max_iter: int = key(100, "[1, 10000]")     # the Krylov basis is max_iter vectors of every parameter
    trace: bool = False
    trace_samples: int = key(20, "[1, 100000]")
    flatness: bool = False
    at_steps_from: Optional[str] = key(None, path=True)
    at_steps_wait_s: float = key(0.0, NONNEGATIVE)


@dataclass
class AlignmentConfig:
    every_n_steps: int = key(50)


@dataclass
class RunConfig:
    task: Any = None        # per task: TASK_SCHEMAS
    model: ModelConfig = field(default_factory=ModelConfig)
    rule: Any = None        # per rule: RULE_SCHEMAS
    optimizer: Any = None   # per _target_: OPTIMIZER_SCHEMAS
    scheduler: Any = None   # per _target_: SCHEDULER_SCHEMAS
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None      # per name: LOGGER_SCHEMAS
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    seed: int = key(0, f"[0, {SEED_MAX}]")
    l2: float = key(0.0, NONNEGATIVE)
    eval_every: int = key(200)
    ckpt_path: Optional[str] = key(None, path=True)
    checkpoint_every: int = key(500)
    threads: int = key(1, "[0, 4096]")
    float64: bool = False
    clip_norm: Optional[float] = key(None, POSITIVE)
    study_arm: Optional[str] = None
    stop_at_train_acc: Optional[float] = key(None, UNIT)
    stop_at_train_loss: Optional[float] = key(None, NONNEGATIVE)
    stop_at_test_acc: Optional[float] = key(None, UNIT)
    stop_at_test_loss: Optional[float] = key(None, NONNEGATIVE)
    stop_at_train_acc_from: Optional[str] = key(None, path=True)
    stop_at_train_loss_from: Optional[str] = key(None, path=True)
    stop_at_test_acc_from: Optional[str] = key(None, path=True)
    stop_at_test_loss_from: Optional[str] = key(None, path=True)
    stop_check_every: int = key(10, COUNT)
    stop_wait_s: float = key(0.0, NONNEGATIVE)
    stop_at_step_from: Optional[str] = key(None, path=True)
    stop_at_step_wait_s: float = key(0.0, NONNEGATIVE)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)


# ---- the declarations read: which dataclass holds a section, and what a field allows ----

def section_classes(plain: dict) -> dict:
    """{section: dataclass} for this config ('' the top level); rule, task, optimizer, scheduler and logger
    by name or _target_ (None where there is no dataclass: open)."""
    of = lambda group: plain.get(group) or {}  # noqa: E731
    return {"": RunConfig, "model": ModelConfig, "trainer": TrainerConfig, "callbacks": CallbacksConfig,
            "curvature": CurvatureConfig, "alignment": AlignmentConfig,
            "rule": RULE_SCHEMAS.get(of("rule").get("name")), "task": TASK_SCHEMAS.get(of("task").get("name")),
            "optimizer": OPTIMIZER_SCHEMAS.get(of("optimizer").get("_target_")),
            "scheduler": SCHEDULER_SCHEMAS.get(of("scheduler").get("_target_")),
            "logger": LOGGER_SCHEMAS.get(of("logger").get("name"), LoggerConfig)}


def parse_range(text: str) -> tuple:
    """"(0, 1]" -> (0.0, 1.0, low_open=True, high_open=False)."""
    low_b, low, high, high_b = re.fullmatch(r"([\[(])\s*([^,]+),\s*([^\])]+)([\])])", text).groups()
    return float(low), float(high), low_b == "(", high_b == ")"  # float() reads "inf" and "-inf" too


def range_of(f, kind) -> str:
    return f.metadata.get("range") or (f"[0, {INT_MAX}]" if kind is int else "(-inf, inf)")


def allowed(f) -> str:
    """What a field allows, in words: 'an integer in [1, 100]', 'one of: a, b', ...; '' when anything goes."""
    if "List" in str(f.type) and (f.metadata.get("range") or f.metadata.get("choices")):
        return "a list, each " + allowed(type("Element", (), {"type": str(f.type).replace("List", ""),
                                                            "metadata": f.metadata}))
    meta = f.metadata
    if meta.get("choices") is not None:
        return "one of: " + ", ".join(map(str, resolve_choices(meta["choices"])))
    kind = number_kind(f.type)
    if kind is None:
        return f"a path of at most {PATH_MAX} characters, {NAME_MAX} in each part" if meta.get("path") else ""
    text = range_of(f, kind)
    if kind is int:
        low, high, _, _ = parse_range(text)
        return f"an integer >= {low:.0f} (at most {high:.0f})" if high in (INT_MAX, SEED_MAX) \
            else f"an integer in [{low:.0f}, {high:.0f}]"
    return f"a finite number in {text}"


def number_kind(annotation) -> type | None:
    text = str(annotation)
    return int if re.search(r"\bint\b", text) else float if re.search(r"\bfloat\b", text) else None


def resolve_choices(choices) -> list:
    if isinstance(choices, str):
        module, name = choices.split(":")
        return sorted(getattr(importlib.import_module(module), name))
    return list(choices)


def value_ok(f, value) -> bool:
    meta, kind = f.metadata, number_kind(f.type)
    if meta.get("choices") is not None:
        return value in resolve_choices(meta["choices"])
    if meta.get("path"):
        return len(str(value)) <= PATH_MAX and all(len(part.encode()) <= NAME_MAX for part in str(value).split("/"))
    if kind is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        return False
    low, high, low_open, high_open = parse_range(range_of(f, kind))
    return (math.isfinite(value) and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high))


def check_values(cfg: DictConfig) -> None:
    """Every declared value against its declaration; ConfigError naming the key, the value and what is allowed."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for section, cls in section_classes(plain).items():
        node = plain.get(section) if section else plain
        for f in fields(cls) if cls and isinstance(node, dict) else ():
            value = node.get(f.name)
            if value is None or is_dataclass(f.default_factory if callable(f.default_factory) else None):
                continue
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                if not value_ok(f, item):
                    name = f"{section + '.' if section else ''}{f.name}"
                    name += f"[{i}]" if isinstance(value, list) else ""
                    why = allowed(f).removeprefix("a list, each ")
                    why = f"choose {why}" if why.startswith("one of") else f"it must be {why}"
                    raise ConfigError(f"{name}={item!r} is not allowed; {why}")


# ---- types and unknown keys ----

@lru_cache(maxsize=None)
def declared_paths() -> frozenset:
    """Every dotted key some YAML under conf/ sets: a group's options (conf/<group>/*.yaml) under the group's
    name, config.yaml and `# @package _global_` presets (experiment, arm) from the top."""
    paths: set = set()

    def walk(node, prefix: str) -> None:
        for name, value in node.items():
            if name not in ("defaults", "hydra"):
                paths.add(prefix + str(name))
                if isinstance(value, dict):
                    walk(value, f"{prefix}{name}.")

    for path in sorted(CONF_DIR.rglob("*.yaml")):
        text = path.read_text()
        group = path.parent.relative_to(CONF_DIR).as_posix()
        prefix = "" if group == "." or "@package _global_" in text else group.replace("/", ".") + "."
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if isinstance(node, dict):
            walk(node, prefix)
    return frozenset(paths)


def yaml_keys(group: str | None) -> frozenset:
    """Keys the YAML files declare at the top level (group None) or in a group."""
    if group is None:
        return frozenset(p for p in declared_paths() if "." not in p)
    return frozenset(p[len(group) + 1:] for p in declared_paths()
                     if p.startswith(group + ".") and "." not in p[len(group) + 1:])


def trainer_arguments() -> frozenset:
    import pytorch_lightning as pl
    return frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "callbacks", "logger",
                                                                             "plugins", "default_root_dir"}


def schema_for(plain: dict) -> DictConfig:
    """The structured schema of this config; sections without a dataclass are open (their builder checks)."""
    schema = OmegaConf.structured(RunConfig)
    with open_dict(schema):
        for section, cls in section_classes(plain).items():
            if section in ("rule", "task", "optimizer", "scheduler", "logger"):
                schema[section] = OmegaConf.structured(cls) if cls else OmegaConf.create({})
                OmegaConf.set_struct(schema[section], cls is not None or section in ("optimizer", "scheduler"))
    untyped = {None: yaml_keys(None), "trainer": yaml_keys("trainer") | trainer_arguments()}
    for section in (None, "model", "curvature", "alignment", "callbacks", "rule", "task", "optimizer",
                    "scheduler", "logger", "trainer"):
        node = schema[section] if section else schema
        given = plain.get(section) or {} if section else plain
        with open_dict(node):  # a key a YAML declares that no dataclass does (yet): accepted untyped
            for name in (untyped.get(section) or yaml_keys(section)) & set(given):
                if name not in node:
                    node[name] = None
    return schema


def check_schema(cfg: DictConfig | dict) -> DictConfig:
    """The config merged into its schema (types converted, struct mode) with every value checked, or
    ConfigError with one line naming the key."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as err:
        name = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{name}: cannot resolve its value ({str(err).splitlines()[0]})") from None
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    schema = schema_for(plain)
    try:
        merged = OmegaConf.merge(schema, plain)
    except ConfigKeyError as err:
        name = err.full_key or err.key
        parent = name.rsplit(".", 1)[0] if "." in name else None
        node = OmegaConf.select(schema, parent) if parent else schema
        names = ", ".join(sorted(str(k) for k in node.keys())) if hasattr(node, "keys") else ""
        raise ConfigError(f"unknown config key '{name}'; {parent or 'the top level'} has: {names}") from None
    except OmegaConfBaseException as err:
        reason = getattr(err, "msg", str(err)).splitlines()[0]
        for word, plain_words in (("Integer", "it must be an integer"), ("Float", "it must be a number"),
                                  ("bool", "it must be true or false")):
            if word in reason:
                reason = plain_words
        raise ConfigError(f"{err.full_key or err.key}={err.value!r} is not allowed; {reason}") from None
    check_values(merged)
    OmegaConf.set_struct(merged, True)
    return merged
