"""May a study reuse recorded baseline runs (docs/study) instead of training them again?

A record is reused only when both hold:
  1. its `config` is the config this study would run for that arm, task and seed (composed from the study
     preset now, through the same schema, validation and settling as train.py), apart from what cannot
     change a computed value (the logger, the progress bar) and keys the record predates (added since with
     a default; the rerun below is what vouches for those);
  2. a sample of the arm's records, rerun on this code with tools/rerun_record.py, comes out the same
     (scores and rho to 1e-6, lambda_1 within the Lanczos tolerance). A task with a sample that differs
     reuses nothing: its code path changed.
An arm is reused for a task only when every requested seed has a usable record; otherwise it runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# keys that never change a computed value (compared nowhere): where the logs go and how progress shows
IGNORED = ("logger", "trainer.enable_progress_bar", "ckpt_path")
REUSABLE_STATUSES = ("ok", "diverged")  # outcomes of the protocol; failed / interrupted runs are not results


@dataclass(eq=False)  # hashable by identity: decisions key the rerun samples
class ArmDecision:
    task: str
    arm: str
    reuse: bool
    why: str
    records: dict[int, Path] = field(default_factory=dict)  # seed -> run dir holding summary.json
    commits: set[str] = field(default_factory=set)


def expected_config(overrides: list[str]) -> dict:
    """The resolved config train.py would record for one job with these overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from rulescape.schema import check_schema
    from rulescape.validate import settle, validate
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    cfg = check_schema(cfg)
    validate(cfg)
    settle(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def differences(recorded, expected, path: str = "") -> list[str]:
    """Where a recorded config differs from the expected one (`key: recorded -> expected`); keys in IGNORED
    and keys the record does not have are left out."""
    if path in IGNORED:
        return []
    if isinstance(recorded, dict) and isinstance(expected, dict):
        out = []
        for key in recorded:
            sub = f"{path}.{key}" if path else str(key)
            out += differences(recorded[key], expected.get(key, "<absent now>"), sub)
        return out
    return [] if recorded == expected else [f"{path}: {recorded!r} -> {expected!r}"]


def index_records(root: Path) -> dict[str, list[Path]]:
    """Run directories below root by name (<arm>_<task>_seed<k>), for those holding a summary.json: every
    directory of that name (an edition's records and an older one's, a variance arm's), in path order."""
    if not root.is_dir():
        return {}
    index: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("summary.json")):
        index.setdefault(p.parent.name, []).append(p.parent)
    return index


def check_record(run_dir: Path, seed: int, want: dict) -> str | None:
    """Why the record in run_dir cannot stand for this study's run of that seed, or None when it can."""
    try:
        record = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as err:
        return f"seed {seed}: unreadable record ({err})"
    if record.get("status") not in REUSABLE_STATUSES:
        return f"seed {seed}: status {record.get('status')}"
    diff = differences(record.get("config") or {}, want)
    if diff:
        more = f" (+{len(diff) - 1} more)" if len(diff) > 1 else ""
        return f"seed {seed}: config differs: {diff[0]}{more}"
    return None


def decide(task: str, arm: str, seeds: list[int], index: dict[str, list[Path]], overrides_for) -> ArmDecision:
    """Step 1 (the config check) for one arm of one task; overrides_for(seed) gives that job's overrides. Of
    several records of one name, the first that passes is used; when none does, the first one's reason."""
    found: dict[int, Path] = {}
    commits: set[str] = set()
    for seed in seeds:
        candidates = index.get(f"{arm}_{task}_seed{seed}") or []
        if not candidates:
            return ArmDecision(task, arm, False, f"no record for seed {seed}")
        try:
            want = expected_config(overrides_for(seed))
        except Exception as err:  # noqa: BLE001 - a config this study cannot compose is not comparable
            return ArmDecision(task, arm, False, f"cannot compose this study's config ({err})")
        reasons = [check_record(d, seed, want) for d in candidates]
        passing = [d for d, why in zip(candidates, reasons) if why is None]
        if not passing:
            return ArmDecision(task, arm, False, reasons[0])
        found[seed] = passing[0]
        record = json.loads((passing[0] / "summary.json").read_text())
        commits.add(str((record.get("versions") or {}).get("rulescape", "unknown"))[:7])
    return ArmDecision(task, arm, True, "config equal", found, commits)


def sample(decision: ArmDecision, per_arm: int) -> list[Path]:
    """The records to rerun: the per_arm quickest ones (by recorded wall time), so that a check costs little."""
    def wall(run_dir: Path) -> float:
        try:
            return float(json.loads((run_dir / "summary.json").read_text()).get("wall_time_s") or 0)
        except (OSError, ValueError, TypeError):
            return 0.0
    return sorted(decision.records.values(), key=wall)[:per_arm]


def rerun(run_dirs: list[Path], lanes: int, log: Path) -> dict[Path, str]:
    """tools/rerun_record.py on run_dirs, split over `lanes` processes: {run dir: same | DIFFERENT | skipped |
    error}. Its full output goes to `log`."""
    if not run_dirs:
        return {}
    chunks = [run_dirs[i::lanes] for i in range(lanes) if run_dirs[i::lanes]]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tools" / "rerun_record.py"), *map(str, chunk)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for chunk in chunks]
    outcome: dict[Path, str] = {d: "error" for d in run_dirs}
    with open(log, "a", encoding="utf-8") as out:
        for proc in procs:
            text, _ = proc.communicate()
            out.write(text)
            for line in text.splitlines():
                word, _, rest = line.strip().partition(" ")
                if word in ("same", "DIFFERENT", "skipped"):
                    path = Path(rest.strip())
                    for d in run_dirs:
                        if d == path or str(d) == rest.strip():
                            outcome[d] = word
    return outcome
