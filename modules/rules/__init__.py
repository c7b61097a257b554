"""Rules found by short name (`rule=rflo`). Every module in this package that defines a Rule subclass
with a `name` registers it by being imported here; adding a rule is one file plus one conf/rule/*.yaml."""
from __future__ import annotations

import importlib
import pkgutil

from modules.rules.base import Estimate, Rule

RULES: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    RULES[cls.name] = cls
    return cls


def build_rule(name: str, net, **params) -> Rule:
    """Instantiate the rule called `name` for network `net`, with its config parameters."""
    if name not in RULES:
        raise ValueError(f"unknown rule '{name}'; choose one of: {', '.join(sorted(RULES))}")
    return RULES[name](net, **params)


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Estimate", "Rule", "RULES", "register", "build_rule"]
