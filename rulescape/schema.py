"""The typed config schema: one dataclass per config group (OmegaConf structured configs). `check_schema`
merges a composed config into it, so every type, boolean and unknown key is enforced here, by declaration;
rulescape/validate.py keeps the ranges and the cross-field rules.

Open and closed groups:
- Closed (an unknown key is refused): the top level, model, optimizer (per _target_), scheduler (per
  _target_), curvature, alignment, callbacks, logger; trainer accepts what pl.Trainer accepts.
- rule and task are per-name dataclasses (RULE_SCHEMAS, TASK_SCHEMAS); a rule or task without one is open
  (its keys pass to the rule or datamodule, which refuses what it does not take, in one line).
- A key that a YAML file under conf/ declares but no dataclass does yet is accepted untyped, so adding a key
  to a YAML never breaks a run. To type it, add one line to the group's dataclass:
      stop_at_train_acc: Optional[float] = None        # in RunConfig
      rho_mode: str = "mean"                            # in a RuleConfig subclass, e.g. BpttScaledRule
  and a new rule or task gets its dataclass (subclass RuleConfig / TaskConfig) and one RULE_SCHEMAS /
  TASK_SCHEMAS entry (without one it is open: its keys are untyped)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rulescape.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class ModelConfig:
    hidden_size: int = 128
    alpha: float = 0.2
    activation: str = "relu"
    g: float = 1.0
    bias: bool = True
    noise_std: float = 0.0
    dale: bool = False
    n_cell_types: int = 2
    readout_scale: float = 0.1


@dataclass
class RuleConfig:
    name: str = "bptt"


@dataclass
class TbpttRule(RuleConfig):
    window: int = 10


@dataclass
class RfloRule(RuleConfig):
    feedback_scale: float = 0.3
    feedback_norm: str = "readout"


@dataclass
class BpttScaledRule(RuleConfig):
    rho: Optional[float] = None
    rho_from: Optional[str] = None
    rho_mode: str = "mean"
    rho_wait_s: float = 0.0


RULE_SCHEMAS = {"bptt": RuleConfig, "eprop": RuleConfig, "mdgl": RuleConfig, "rflo": RfloRule,
                "tbptt": TbpttRule, "bptt_scaled": BpttScaledRule}


@dataclass
class TaskConfig:
    name: str = "dms"
    alpha: float = 0.2
    lr: float = 0.1
    max_steps: int = 3000
    l2: float = 0.0
    eval_every: int = 200
    curvature_every: int = 500
    alignment_every: int = 50
    train_size: int = 256
    test_size: int = 1024
    noise: Optional[float] = None
    test_noise: Optional[float] = None
    batch_size: int = 64
    seed: int = 0
    study: Any = None       # the task's study settings (conf/experiment/study_<task>.yaml reads them)


@dataclass
class DmsTask(TaskConfig):
    n_stimuli: int = 2
    dt: float = 20.0
    fixation: float = 100.0
    sample: float = 200.0
    delay: float = 500.0
    test: float = 200.0
    response_steps: int = 1
    amplitude: float = 1.0
    shift_noise: Optional[float] = None
    shift_delays: Optional[List[float]] = None


@dataclass
class PatternTask(TaskConfig):
    dt: float = 20.0
    duration: float = 1000.0
    periods: List[float] = field(default_factory=lambda: [1000.0, 500.0, 333.0, 200.0])
    amplitude_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    n_inputs: int = 10
    shift_noise: Optional[float] = None


@dataclass
class SeqmnistTask(TaskConfig):
    source: str = "mlxtend5k"
    data_dir: str = "data"


TASK_SCHEMAS = {"dms": DmsTask, "pattern": PatternTask, "seqmnist": SeqmnistTask}


@dataclass
class SgdOptimizer:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.1
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


@dataclass
class AdamOptimizer:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 0.003
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


OPTIMIZER_SCHEMAS = {"torch.optim.SGD": SgdOptimizer, "torch.optim.Adam": AdamOptimizer}


@dataclass
class StepLRScheduler:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = 200
    gamma: float = 0.8


SCHEDULER_SCHEMAS = {"torch.optim.lr_scheduler.StepLR": StepLRScheduler}


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1           # an int, a list of device indices or "auto"
    max_steps: int = 3000
    log_every_n_steps: int = 1
    enable_checkpointing: bool = True
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    deterministic: Any = False  # bool or "warn"


@dataclass
class LoggerConfig:
    name: str = "none"


@dataclass
class WandbLoggerConfig(LoggerConfig):
    project: str = "rulescape"
    entity: Optional[str] = None
    mode: str = "auto"
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


LOGGER_SCHEMAS = {"wandb": WandbLoggerConfig, "csv": LoggerConfig, "none": LoggerConfig}
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class CallbacksConfig:
    enabled: List[str] = field(default_factory=lambda: ["generalization", "curvature", "alignment", "theory"])


@dataclass
class CurvatureConfig:
    every_n_steps: int = 500
    params: str = "recurrent"
    k: int = 1
    backend: str = "lanczos"
    batch_size: int = 256
    tol: float = 1e-4
    max_iter: int = 100
    trace: bool = False
    trace_samples: int = 20
    flatness: bool = False


@dataclass
class AlignmentConfig:
    every_n_steps: int = 50


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
    seed: int = 0
    l2: float = 0.0
    eval_every: int = 200
    ckpt_path: Optional[str] = None
    checkpoint_every: int = 500
    threads: int = 1
    float64: bool = False
    clip_norm: Optional[float] = None
    study_arm: Optional[str] = None
    stop_at_train_acc: Optional[float] = None
    stop_at_train_loss: Optional[float] = None
    stop_at_test_acc: Optional[float] = None
    stop_at_test_loss: Optional[float] = None
    stop_at_train_acc_from: Optional[str] = None
    stop_at_train_loss_from: Optional[str] = None
    stop_at_test_acc_from: Optional[str] = None
    stop_at_test_loss_from: Optional[str] = None
    stop_check_every: int = 10
    stop_wait_s: float = 0.0
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)


@lru_cache(maxsize=None)
def declared_paths() -> frozenset:
    """Every dotted key some YAML under conf/ sets: a group's options (conf/<group>/*.yaml) under the group's
    name, config.yaml and `# @package _global_` presets (experiment, arm) from the top."""
    paths: set = set()

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if key in ("defaults", "hydra"):
                continue
            paths.add(prefix + str(key))
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

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


def typed(schema_class, open_keys: bool = False) -> DictConfig:
    node = OmegaConf.structured(schema_class)
    OmegaConf.set_struct(node, not open_keys)
    return node


def add_untyped(node: DictConfig, keys) -> None:
    """Accept keys a YAML declares that the dataclass does not (yet): untyped."""
    with open_dict(node):
        for key in keys:
            if key not in node:
                node[key] = None


def schema_for(plain: dict) -> DictConfig:
    """The schema of this config: per-name dataclasses for rule, task, optimizer, scheduler and logger."""
    schema = OmegaConf.structured(RunConfig)
    rule, task = plain.get("rule") or {}, plain.get("task") or {}
    optimizer, scheduler = plain.get("optimizer") or {}, plain.get("scheduler") or {}
    logger = plain.get("logger") or {}
    with open_dict(schema):
        # a rule or task without a dataclass yet is open: its builder checks its keys
        schema.rule = typed(RULE_SCHEMAS.get(rule.get("name"), RuleConfig),
                            open_keys=rule.get("name") not in RULE_SCHEMAS)
        schema.task = typed(TASK_SCHEMAS.get(task.get("name"), TaskConfig),
                            open_keys=task.get("name") not in TASK_SCHEMAS)
        known = OPTIMIZER_SCHEMAS.get(optimizer.get("_target_"))
        schema.optimizer = typed(known) if known else OmegaConf.create({})  # unknown: its constructor checks
        known = SCHEDULER_SCHEMAS.get(scheduler.get("_target_"))
        schema.scheduler = typed(known) if known else OmegaConf.create({})
        schema.logger = typed(LOGGER_SCHEMAS.get(logger.get("name"), LoggerConfig))
    add_untyped(schema, yaml_keys(None) & set(plain))
    for group in ("model", "curvature", "alignment", "callbacks", "rule", "task", "optimizer", "scheduler",
                  "logger"):
        add_untyped(schema[group], yaml_keys(group) & set(plain.get(group) or {}))
    given = set(plain.get("trainer") or {})
    add_untyped(schema.trainer, (yaml_keys("trainer") | trainer_arguments()) & given)
    return schema


def check_schema(cfg: DictConfig | dict) -> DictConfig:
    """The config merged into its schema (types converted, struct mode), or ConfigError with one line
    naming the key."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"{key}: cannot resolve its value ({str(err).splitlines()[0]})") from None
    plain = {k: v for k, v in plain.items() if k != "hydra"}
    schema = schema_for(plain)
    try:
        merged = OmegaConf.merge(schema, plain)
    except ConfigKeyError as err:
        key = err.full_key or err.key
        parent = key.rsplit(".", 1)[0] if "." in key else None
        node = OmegaConf.select(schema, parent) if parent else schema
        keys = ", ".join(sorted(str(k) for k in node.keys())) if hasattr(node, "keys") else ""
        raise ConfigError(f"unknown config key '{key}'; {parent or 'the top level'} has: {keys}") from None
    except OmegaConfBaseException as err:
        key = err.full_key or err.key
        reason = getattr(err, "msg", str(err)).splitlines()[0]
        for word, plain_words in (("Integer", "it must be an integer"), ("Float", "it must be a number"),
                                  ("bool", "it must be true or false")):
            if word in reason:
                reason = plain_words
        raise ConfigError(f"{key}={err.value!r} is not allowed; {reason}") from None
    if merged.logger.name == "wandb" and merged.logger.mode not in WANDB_MODES:
        raise ConfigError(f"logger.mode={merged.logger.mode!r} is not allowed; choose one of: {', '.join(WANDB_MODES)}")
    OmegaConf.set_struct(merged, True)
    return merged
