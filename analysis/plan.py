"""The analysis plan as data (docs/study/plan.yaml): primary claims per task, the "any rule" template, the
controls' claims, α, the equivalence margins, the chance levels; and where the plan comes from (its sha256,
the commit that last changed it, and whether that commit precedes the runs' code: pre-registered).

A claim spec is a dict: claim (a kind of analysis.claim_kinds), arm, against, test, pairing ("seed" |
"none"), alternative, family, alpha. `Plan.claims_for(task, arms)` expands the plan over the arms a task's
records hold: primary claims first, then the template for every arm that is neither the reference nor a
control (any rule name at all), then the controls' exploratory claims.
"""
from __future__ import annotations

import fnmatch
import hashlib
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from analysis.hypothesis import TESTS

DEFAULT_PLAN = Path(__file__).resolve().parent.parent / "docs" / "study" / "plan.yaml"
PAIRINGS = ("seed", "none")
ALTERNATIVES = ("greater", "less", "two-sided", "equivalent")
# classification chance levels by task when the plan does not state one (1 / number of classes)
KNOWN_CHANCE = {"dms": 0.5, "seqmnist": 0.1}


class PlanError(ValueError):
    """The plan file is missing or malformed (report.py: one line, exit 2)."""


@dataclass
class Spec:
    claim: str
    arm: str
    against: str | None
    test: str
    pairing: str
    alternative: str
    family: str
    alpha: float
    primary: bool

    @property
    def key(self) -> tuple:
        return (self.claim, self.arm, self.against)


@dataclass
class Plan:
    path: str
    alpha: float = 0.05
    learned_margin: float = 0.15
    lambda_ratio: float = 1.5
    min_n: int = 3          # a claim whose gated runs (or pairs) fall below this reads "not interpretable"
    reference: str = "bptt"
    controls: list[str] = field(default_factory=list)
    tasks: dict = field(default_factory=dict)
    any_rule: list[dict] = field(default_factory=list)
    exploratory: list[dict] = field(default_factory=list)
    rule_controls: list[dict] = field(default_factory=list)  # arm/against templates with {rule}
    arms: list[str] | None = None  # every arm the edition runs (globs); None: the plan names no list

    def names_arm(self, arm: str) -> bool:
        """Whether the plan names this arm among the ones its edition runs (always, when it lists none)."""
        return self.arms is None or any(fnmatch.fnmatchcase(arm, a) for a in self.arms)

    def task(self, task: str) -> dict:
        return self.tasks.get(task) or {}

    def chance(self, task: str) -> float | None:
        """The task's chance score: the plan's, else 1 / n classes of a known task, else None (no gating)."""
        c = self.task(task).get("chance")
        return float(c) if c is not None else KNOWN_CHANCE.get(task)

    def margin(self, task: str) -> float:
        """How far above chance a run's test score must be to count as learned: the task's own
        `learned_margin` where the plan gives one (pattern: a regression task's chance is 0), else the plan's."""
        m = self.task(task).get("learned_margin")
        return float(m) if m is not None else self.learned_margin

    def gap_margin(self, task: str) -> float | None:
        m = self.task(task).get("gap_margin")
        return float(m) if m is not None else None

    def rules(self, arms) -> list[str]:
        """The arms under test: neither the reference nor a control."""
        return [a for a in arms if a != self.reference and not self.is_control(a)]

    def is_control(self, arm: str) -> bool:
        """A control arm: named in `controls`, where a name may be a glob (study.py's `bptt_matched_<rule>`)."""
        return any(fnmatch.fnmatchcase(arm, c) for c in self.controls)

    def pooled(self, arms) -> list[str]:
        """The arms "pooled" means (figure and table alike): the reference and every rule under test."""
        return [a for a in arms if a == self.reference or a in self.rules(arms)]

    def claims_for(self, task: str, arms: list[str]) -> list[Spec]:
        specs: list[Spec] = []
        seen = set()

        def add(d: dict, primary: bool, arm: str | None = None):
            s = self._spec(d, primary, arm)
            if s.key not in seen:
                seen.add(s.key)
                specs.append(s)
        for d in self.task(task).get("primary") or []:
            add(d, True)
        for arm in self.rules(arms):
            for d in self.any_rule:
                add(d, False, arm)
        for d in self.exploratory:
            add(d, False)
        for rule in self.rules(arms):  # study.py's controls of a rule: bptt_matched_<rule>, ...
            for d in self.rule_controls:
                named = {**d, "arm": d["arm"].format(rule=rule), "against": str(d.get("against", "")).format(rule=rule)}
                if named["arm"] in arms:
                    add(named, False)
        return specs

    def _spec(self, d: dict, primary: bool, arm: str | None) -> Spec:
        return Spec(claim=d["claim"], arm=arm or d["arm"], against=d.get("against"), test=d["test"],
                    pairing=d.get("pairing", "none"), alternative=d.get("alternative", "greater"),
                    family=str(d.get("family", d["claim"])), alpha=float(d.get("alpha", self.alpha)),
                    primary=primary)


def known_kinds() -> tuple[str, ...]:
    """The claim kinds the code can evaluate: the registry analysis.claim_kinds evaluates (analysis.claim_sentences's
    TEXT: a kind and its row's sentence), never a list kept here."""
    from analysis.claim_sentences import TEXT
    return tuple(TEXT)


def _number(value, where: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """A finite number in the range (bools and strings are not numbers); PlanError naming it otherwise."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < low or value > high or (low_open and value == low) or (high_open and value == high):
        raise PlanError(f"{where}={value!r} is refused; a finite number in {shown}")
    return float(value)


def _text(value, where: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise PlanError(f"{where}={value!r} is refused; a name (a non-empty string)")


def _check_spec(d, where: str, need_arm: bool) -> None:
    if not isinstance(d, dict):
        raise PlanError(f"{where}: a claim must be a mapping, got {d!r}")
    for key in ("claim", "test") + (("arm",) if need_arm else ()):
        if key not in d:
            raise PlanError(f"{where}: claim {d} has no {key!r}")
    kinds = known_kinds()
    if d["claim"] not in kinds:
        raise PlanError(f"{where}: unknown claim {d['claim']!r}; allowed: {', '.join(kinds)}")
    if d["test"] not in TESTS:
        raise PlanError(f"{where}: unknown test {d['test']!r}; allowed: {', '.join(TESTS)}")
    if d.get("pairing", "none") not in PAIRINGS:
        raise PlanError(f"{where}: pairing {d.get('pairing')!r}; allowed: {', '.join(PAIRINGS)}")
    if d.get("alternative", "greater") not in ALTERNATIVES:
        raise PlanError(f"{where}: alternative {d.get('alternative')!r}; allowed: {', '.join(ALTERNATIVES)}")
    if "arm" in d:
        _text(d["arm"], f"{where}.arm")
    _text(d.get("against"), f"{where}.against", optional=True)
    if "family" in d and (isinstance(d["family"], (dict, list, bool)) or d["family"] is None):
        raise PlanError(f"{where}.family={d['family']!r} is refused; a name")
    if "alpha" in d:
        _number(d["alpha"], f"{where}.alpha", 0, 1, low_open=True, high_open=True)


def _check_top(raw: dict) -> None:
    """Types and ranges of the plan's own keys (a claim's: _check_spec)."""
    if "alpha" in raw:
        _number(raw["alpha"], "alpha", 0, 1, low_open=True, high_open=True)
    if "learned_margin" in raw:
        _number(raw["learned_margin"], "learned_margin", 0, 1)
    if "lambda_ratio" in raw:
        _number(raw["lambda_ratio"], "lambda_ratio", 1, math.inf, low_open=True, high_open=True)
    if "reference" in raw:
        _text(raw["reference"], "reference")
    controls = raw.get("controls")
    if controls is not None and (not isinstance(controls, list) or not all(isinstance(c, str) and c for c in controls)):
        raise PlanError(f"controls={controls!r} is refused; a list of arm names or globs, e.g. [bptt_matched, "
                        "bptt_matched_*]")
    arms = raw.get("arms")
    if arms is not None and (not isinstance(arms, list) or not all(isinstance(a, str) and a for a in arms)):
        raise PlanError(f"arms={arms!r} is refused; a list of arm names or globs, e.g. [bptt, eprop, bptt_matched_*]")
    if "min_n" in raw and (isinstance(raw["min_n"], bool) or not isinstance(raw["min_n"], int) or raw["min_n"] < 1):
        raise PlanError(f"min_n={raw['min_n']!r} is refused; an integer >= 1 (runs or pairs a claim needs)")
    for key in ("any_rule", "exploratory", "rule_controls"):
        if raw.get(key) is not None and not isinstance(raw[key], list):
            raise PlanError(f"{key}={raw[key]!r} is refused; a list of claims")
    tasks = raw.get("tasks")
    if tasks is not None and not isinstance(tasks, dict):
        raise PlanError(f"tasks={tasks!r} is refused; a mapping of task name to its entry")
    for name, task in (tasks or {}).items():
        if not isinstance(task, dict):
            raise PlanError(f"plan task {name!r} is not a mapping")
        if task.get("chance") is not None:
            _number(task["chance"], f"tasks.{name}.chance", 0, 1)
        if task.get("learned_margin") is not None:
            _number(task["learned_margin"], f"tasks.{name}.learned_margin", 0, 1)
        if task.get("gap_margin") is not None:
            _number(task["gap_margin"], f"tasks.{name}.gap_margin", 0, math.inf, low_open=True, high_open=True)
        if task.get("primary") is not None and not isinstance(task["primary"], list):
            raise PlanError(f"tasks.{name}.primary={task['primary']!r} is refused; a list of claims")


def load_plan(path: str | Path = DEFAULT_PLAN) -> Plan:
    """Read and check a plan file; PlanError (one line) when it is missing or malformed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise PlanError(f"cannot read the analysis plan {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise PlanError(f"the analysis plan {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(raw, dict):
        raise PlanError(f"the analysis plan {path} is not a mapping")
    try:
        _check_top(raw)
    except PlanError as err:
        raise PlanError(f"the analysis plan {path}: {err}") from None
    for name, task in (raw.get("tasks") or {}).items():
        primary = task.get("primary") or []
        for d in primary:
            _check_spec(d, f"tasks.{name}.primary", True)
    for d in raw.get("any_rule") or []:
        _check_spec(d, "any_rule", False)
    for d in raw.get("exploratory") or []:
        _check_spec(d, "exploratory", True)
    for d in raw.get("rule_controls") or []:
        _check_spec(d, "rule_controls", True)
    return Plan(path=str(path), alpha=float(raw.get("alpha", 0.05)),
                learned_margin=float(raw.get("learned_margin", 0.15)),
                lambda_ratio=float(raw.get("lambda_ratio", 1.5)), min_n=int(raw.get("min_n", 3)),
                reference=str(raw.get("reference", "bptt")),
                controls=[str(c) for c in raw.get("controls") or []], tasks=raw.get("tasks") or {},
                any_rule=list(raw.get("any_rule") or []), exploratory=list(raw.get("exploratory") or []),
                rule_controls=list(raw.get("rule_controls") or []),
                arms=[str(a) for a in raw["arms"]] if raw.get("arms") is not None else None)


# ------------------------------------------------------------------------------------------ provenance
def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def provenance(path: str | Path, run_commits: set[str]) -> dict:
    """{"sha256", "commit" (last commit that changed the file, or None), "dirty" (uncommitted changes),
    "preregistered": True when that commit is an ancestor of every run's code commit, False when not, None
    when unknown (no git, no commit, or runs without a commit)}."""
    path = Path(path).resolve()
    out = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12], "commit": None, "dirty": False,
           "preregistered": None}
    try:
        log = _git(["log", "-1", "--format=%H", "--", path.name], path.parent)
        commit = log.stdout.strip() if log.returncode == 0 else ""
        if commit:
            out["commit"] = commit
            out["dirty"] = bool(_git(["status", "--porcelain", "--", path.name], path.parent).stdout.strip())
            if run_commits:
                ok = [_git(["merge-base", "--is-ancestor", commit, c], path.parent).returncode == 0
                      for c in sorted(run_commits)]
                out["preregistered"] = all(ok)
                if not all(ok):
                    out["primary_unchanged"] = primary_unchanged(path, run_commits)
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def primary_claims(text: str) -> dict:
    """{task: its primary claim list} of a plan file's text ({} when it cannot be read)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    tasks = raw.get("tasks") if isinstance(raw, dict) else None
    return {k: (v or {}).get("primary") for k, v in tasks.items()} if isinstance(tasks, dict) else {}


def primary_unchanged(path: Path, run_commits: set[str]) -> bool | None:
    """True when the plan's primary claims equal those of the plan file as it stood at every run's commit
    (the plan changed after the runs, its primary claims did not); None when a version cannot be read."""
    now = primary_claims(path.read_text(encoding="utf-8"))
    for c in sorted(run_commits):
        shown = _git(["show", f"{c}:./{path.name}"], path.parent)
        if shown.returncode != 0:
            return None
        if primary_claims(shown.stdout) != now:
            return False
    return bool(now)
