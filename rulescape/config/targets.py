"""What a config may instantiate. A run's config is data: it comes from the command line, from a record's
summary.json (tools/rerun_record.py) or from a checkpoint, and Hydra's `instantiate` would call whatever a
`_target_` names (its block-list stops os.system, not builtins.open or pathlib.Path.touch).

So `_target_` is accepted in two places only, `optimizer._target_` (a torch.optim optimizer) and
`scheduler._target_` (a torch.optim.lr_scheduler scheduler taking plain numbers, or one of rulescape's own,
OWN_SCHEDULERS); anywhere else (a nested
value, another group, Hydra's own callbacks or launcher on the command line) it is refused with one line
before anything is built. Imports nothing heavy at module level: train.py checks its command line with it
before Hydra starts."""
from __future__ import annotations

from rulescape.errors import ConfigError

INSTANTIATED = ("optimizer", "scheduler")  # the config groups the run instantiates (modules/lit_module.py)
# schedulers that take other objects or callables, not numbers: a config cannot give them safely
NOT_FROM_CONFIG = {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "LRScheduler"}
# rulescape's own schedulers (conf/scheduler/): scheduler=over_rho is e-prop at eta / rho_bar (arm eprop_lr_rho)
OWN_SCHEDULERS = ("modules.lr_over_rho.over_rho",)


def allowed_targets(group: str) -> list[str]:
    """The fully qualified names `<group>._target_` may take: torch.optim.<Optimizer subclass> for the
    optimizer, torch.optim.lr_scheduler.<scheduler class> or one of OWN_SCHEDULERS for the scheduler."""
    import inspect

    import torch
    if group == "optimizer":
        module, base, prefix = torch.optim, torch.optim.Optimizer, "torch.optim"
    else:
        module, base = torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler
        prefix = "torch.optim.lr_scheduler"
    names = [n for n, c in vars(module).items() if inspect.isclass(c) and not n.startswith("_")
             and c is not base and n not in NOT_FROM_CONFIG and n != "Optimizer"
             and (issubclass(c, base) or n == "ReduceLROnPlateau")]
    own = list(OWN_SCHEDULERS) if group == "scheduler" else []
    return sorted(f"{prefix}.{n}" for n in names) + own


def target_paths(node, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted path of the node holding it, value) for every `_target_` key anywhere in a plain config."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                found.append((prefix.rstrip("."), value))
            found += target_paths(value, f"{prefix}{key}.")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += target_paths(value, f"{prefix}{i}.")
    return found


def check_targets(config: dict, where: str = "config") -> None:
    """Raise ConfigError (one line) unless every `_target_` in config is an allowed class at an allowed place."""
    for path, target in target_paths(config):
        if path not in INSTANTIATED:
            raise ConfigError(f"{where}: {path + '.' if path else ''}_target_={target!r} is refused; only "
                              f"{' and '.join(g + '._target_' for g in INSTANTIATED)} may name a class "
                              "(a config is data, nothing else in it is instantiated)")
        allowed = allowed_targets(path)
        if target not in allowed:
            short = ", ".join(a.rsplit(".", 1)[1] for a in allowed if a not in OWN_SCHEDULERS)
            own = [a for a in allowed if a in OWN_SCHEDULERS]
            raise ConfigError(f"{where}: {path}._target_={target!r} is refused; choose a class of "
                              f"{allowed[0].rsplit('.', 1)[0]}: {short}" + (f"; or {', '.join(own)}" if own else ""))


def override_target_problem(argv: list[str]) -> str | None:
    """The error line for a command-line override that sets a `_target_` other than optimizer's or
    scheduler's (e.g. `+hydra.callbacks.x._target_=builtins.open`: Hydra would build it before any check)."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if "_target_" not in arg:  # in the key, or in a dict value like key={_target_:...}
            continue
        if key.lstrip("+~") not in (f"{g}._target_" for g in INSTANTIATED) or "_target_" in value:
            return (f"error: {arg!r} is refused; only optimizer._target_ and scheduler._target_ may name a "
                    "class on the command line")
    return None
