"""Rules found by short name (`rule=rflo`). Every module in this package that defines a Rule subclass
with a `name` registers it by being imported here; adding a rule is one file plus one conf/rule/*.yaml.

The registry guards itself, since a rule file is code anyone may drop in: a file that fails to import is
recorded (IMPORT_FAILURES) and the other rules keep working; two classes claiming one name (DUPLICATES) and
a rule whose class attributes reuse a name the base class Rule uses (CLASHES) make that name unusable. Any
use of such a name (build_rule, rule_problem) is refused with one line naming the file(s)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from modules.rules.base import RESERVED, Estimate, Rule

RULES: dict[str, type[Rule]] = {}
IMPORT_FAILURES: dict[str, str] = {}  # rule file -> why it failed to import (one line)
DUPLICATES: dict[str, list[str]] = {}  # rule name -> the files of every class claiming it
CLASHES: dict[str, str] = {}  # rule name -> what in its class reuses a name of the base class


class RuleRegistryError(ValueError):
    """A rule name that cannot be used (duplicate, clash with the base class, unknown while a rule file failed
    to import); its message is one line naming the file(s)."""


FILES: dict[type, str] = {}  # rule class -> the file that registered it


def where(cls: type) -> str:
    """The file that defines a rule class, relative to the repository where it lies inside it."""
    try:
        path = Path(FILES.get(cls) or inspect.getfile(cls)).resolve()
    except (TypeError, OSError):
        return f"<{cls.__module__}>"
    try:
        return str(path.relative_to(Path(__file__).resolve().parent.parent.parent))
    except ValueError:
        return str(path)


def clash(cls: type[Rule]) -> str | None:
    """A class attribute of the rule that reuses a name the base class keeps for itself (an instance attribute
    such as `step`, or a method replaced by a non-callable)."""
    for klass in cls.__mro__:
        if klass is Rule or not issubclass(klass, Rule):
            break
        for attr, value in vars(klass).items():
            if attr.startswith("__"):
                continue
            if attr in RESERVED or (callable(getattr(Rule, attr, None)) and not callable(value)
                                    and not isinstance(value, (staticmethod, classmethod, property))):
                return f"its attribute '{attr}' is a name the base class Rule uses (modules/rules/base.py)"
    return None


def register(cls: type[Rule]) -> type[Rule]:
    import sys
    FILES[cls] = sys._getframe(1).f_code.co_filename  # the decorator's caller: the rule's own file
    name = cls.name
    problem = clash(cls)
    if problem:
        CLASHES[name] = f"rule '{name}' in {where(cls)}: {problem}; rename it"
    if name in DUPLICATES:
        DUPLICATES[name].append(where(cls))
    elif name in RULES and RULES[name] is not cls:
        DUPLICATES[name] = [where(RULES.pop(name)), where(cls)]
    else:
        RULES[name] = cls
    return cls


def rule_problem(name: str) -> str | None:
    """Why rule `name` cannot be used (one line naming the file(s)), or None."""
    if name in DUPLICATES:
        files = DUPLICATES[name]
        return (f"rule name '{name}' is claimed by {len(files)} classes, in {' and '.join(files)}; "
                "a rule's `name` must be unique: rename one")
    if name in CLASHES:
        return CLASHES[name]
    if name not in RULES:
        failed = "; ".join(f"{file} failed to import ({why})" for file, why in sorted(IMPORT_FAILURES.items()))
        return (f"unknown rule '{name}'; choose one of: {', '.join(sorted(RULES))}"
                + (f" ({failed})" if failed else ""))
    return None


def registry_problem(name) -> str | None:
    """rule_problem for a name the registry cannot use for a reason other than being unknown: two classes
    claim it, it clashes with the base class, or (unknown) a rule file failed to import. None otherwise, also
    for a plainly unknown name (the config's schema names the choices)."""
    if isinstance(name, str) and (name in DUPLICATES or name in CLASHES or name not in RULES and IMPORT_FAILURES):
        return rule_problem(name)
    return None


def build_rule(name: str, net, **params) -> Rule:
    """Instantiate the rule called `name` for network `net`, with its config parameters."""
    problem = rule_problem(name)
    if problem:
        raise RuleRegistryError(problem)
    return RULES[name](net, **params)


def import_rules(package: str = __name__, path=None) -> None:
    """Import every module of the package (its rules register themselves); a module that fails to import is
    recorded in IMPORT_FAILURES, one line, and the others still load."""
    for info in pkgutil.iter_modules(path if path is not None else __path__):
        if info.name == "base":
            continue
        try:
            importlib.import_module(f"{package}.{info.name}")
        except Exception as err:  # noqa: BLE001 - a rule file is code; its failure is one line, not a crash
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            file = f"modules/rules/{info.name}.py"
            IMPORT_FAILURES[file] = f"{type(err).__name__}: {text}".rstrip(": ")


import_rules()

__all__ = ["Estimate", "Rule", "RULES", "register", "build_rule", "rule_problem", "RuleRegistryError"]
