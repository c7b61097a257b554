"""May a study reuse recorded baseline runs (docs/study) instead of training them again?

A record is data from anywhere, so it is reused only when every check holds (`check_record`):
  1. it is a regular file (not a FIFO, a directory or a symlink), readable JSON, status `ok`;
  2. its `config` is the config this study would run for that arm, task and seed (composed from the study
     preset now, through the same schema, validation and settling as train.py): every key present on both
     sides and equal, apart from what cannot change a computed value (IGNORED);
  3. its provenance: the commit that made it (`versions.rulescape`) is in this checkout's history, and the
     record is byte for byte the committed one where git tracks it, or else listed with its SHA-256 in
     `records.sha256` at the root it comes from (study.py writes one for every study it runs);
  4. one record per name qualifies (two that do are a tie, refused with both paths);
  5. a sample of the arm's records, chosen at random (never by the records' own fields), rerun on this code
     with tools/rerun_record.py, comes out the same (scores and rho to 1e-6, lambda_1 within the Lanczos
     tolerance). A task with a sample that differs reuses nothing: its code path changed.
An arm is reused for a task only when every requested seed has a usable record; otherwise it runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# keys that never change a computed value (compared nowhere): where the logs go and how progress shows
IGNORED = ("logger", "trainer.enable_progress_bar", "ckpt_path")
REUSABLE_STATUSES = ("ok",)  # a diverged, failed or interrupted run is not a baseline to compare with
MANIFEST = "records.sha256"  # "<sha256>  <path relative to the manifest's folder>" per line (sha256sum's format)


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
    from rulescape.config.schema import check_schema
    from rulescape.config.validate import settle, validate
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    cfg = check_schema(cfg)
    validate(cfg)
    settle(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def index_records(root: Path) -> dict[str, list[Path]]:
    """Run directories below root by name (<arm>_<task>_seed<k>), for those holding a summary.json: every
    directory of that name (an edition's records and an older one's, a variance arm's), in path order."""
    if not root.is_dir():
        return {}
    index: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("summary.json")):
        index.setdefault(p.parent.name, []).append(p.parent)
    for p in sorted(root.rglob("*")):  # rglob does not enter symlinked directories: listed, to be refused aloud
        if p.is_symlink() and p.is_dir() and p not in index.get(p.name, []):
            index.setdefault(p.name, []).append(p)
    return index


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file (never a FIFO, device, directory or symlink); OSError otherwise."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path} is not a regular file")
    return path.read_bytes()


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, timeout=30)


def manifest_hash(path: Path) -> str | None:
    """The SHA-256 a records.sha256 in one of path's folders lists for path, or None."""
    for folder in path.parents:
        listing = folder / MANIFEST
        try:
            text = read_regular(listing).decode()
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            digest, _, name = line.strip().partition("  ")
            if name and (folder / name).resolve() == path.resolve():
                return digest
    return None


def provenance_problem(path: Path, data: bytes, record: dict) -> str | None:
    """Why a record cannot be trusted to be what a commit of this code made, or None: its commit is in this
    checkout's history, and the file is the committed one (git) or the one a study listed (records.sha256)."""
    commit = str((record.get("versions") or {}).get("rulescape") or "")
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return f"made by an unknown commit ({commit or 'none recorded'})"
    if git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
        return f"made by commit {commit[:12]}, which is not in this checkout's history"
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        rel = None
    if rel is not None and git("ls-files", "--error-unmatch", str(rel)).returncode == 0:
        committed = git("show", f"HEAD:{rel}")
        if committed.returncode != 0 or committed.stdout != data:
            return f"{path} differs from the committed record (git diff {rel})"
        return None
    listed = manifest_hash(path)
    if listed is None:
        return f"{path} is neither committed in git nor listed in a {MANIFEST}"
    if listed != hashlib.sha256(data).hexdigest():
        return f"{path} differs from the SHA-256 its {MANIFEST} lists"
    return None


def write_manifest(root: Path) -> Path:
    """<root>/records.sha256: the SHA-256 of every regular summary.json below root (a study's runs), so that a
    later study may reuse them from there (study.baselines_from) only as they were written."""
    lines = []
    for path in sorted(root.rglob("summary.json")):
        try:
            lines.append(f"{hashlib.sha256(read_regular(path)).hexdigest()}  {path.relative_to(root)}")
        except OSError:
            continue
    out = root / MANIFEST
    out.write_text("".join(f"{line}\n" for line in lines))
    return out


def check_record(run_dir: Path, seed: int, want: dict) -> str | None:
    """Why the record in run_dir cannot stand for this study's run of that seed, or None when it can."""
    from rulescape.run.checkpoint import config_mismatch, flat
    path = run_dir / "summary.json"
    if run_dir.is_symlink():
        return f"seed {seed}: {run_dir} is a symlinked directory (records are read from regular files only)"
    try:
        data = read_regular(path)
        record = json.loads(data)
    except (OSError, ValueError) as err:
        return f"seed {seed}: unreadable record ({err})"
    if not isinstance(record, dict):
        return f"seed {seed}: unreadable record (not a JSON object)"
    if record.get("status") not in REUSABLE_STATUSES:
        return f"seed {seed}: status {record.get('status')}"
    config = record.get("config")
    if not isinstance(config, dict) or not config:
        return f"seed {seed}: config differs: the record holds no config"
    key = config_mismatch(config, want, IGNORED)
    if key is not None:
        a, b = flat(config), flat(want)
        return f"seed {seed}: config differs: {key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent now>')!r}"
    problem = provenance_problem(path, data, record)
    return f"seed {seed}: {problem}" if problem else None


NOT_RESULT = ("timing", "wall_time_s", "versions")  # how long and on which commit, not what came out


def result_of(run_dir: Path) -> dict:
    """A record without what does not belong to its outcome (NOT_RESULT)."""
    record = json.loads(read_regular(run_dir / "summary.json"))
    return {k: v for k, v in record.items() if k not in NOT_RESULT}


def decide(task: str, arm: str, seeds: list[int], index: dict[str, list[Path]], overrides_for) -> ArmDecision:
    """Checks 1-4 for one arm of one task; overrides_for(seed) gives that job's overrides. Of several records
    of one name, the one that passes is used (several that pass must hold the same outcome: else a tie,
    refused); when none does, the first one's reason."""
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
        results = [result_of(d) for d in passing]
        for other, result in zip(passing[1:], results[1:]):
            if result != results[0]:  # the same run twice (an edition's copy) is no tie; two outcomes are
                return ArmDecision(task, arm, False, f"seed {seed}: two records qualify and disagree, {passing[0]} "
                                                     f"and {other} (keep one, or point study.baselines_from at one)")
        found[seed] = passing[0]
        record = json.loads(read_regular(passing[0] / "summary.json"))
        commits.add(str((record.get("versions") or {}).get("rulescape", "unknown"))[:7])
    return ArmDecision(task, arm, True, "config equal, provenance checked", found, commits)


def sample(decision: ArmDecision, per_arm: int, rng: random.Random | None = None) -> list[Path]:
    """The records to rerun: per_arm of them drawn at random (from the OS's entropy unless rng is given), so
    that nothing a record says about itself (its wall time, its seed) decides whether it is checked."""
    records = sorted(decision.records.values())
    return sorted((rng or random.SystemRandom()).sample(records, min(per_arm, len(records))))


def source(decision: ArmDecision) -> str:
    """Where the reused records really are: their common folder."""
    paths = [str(p.parent) for p in decision.records.values()]
    return os.path.commonpath(paths) if paths else "nowhere"


def rerun(run_dirs: list[Path], lanes: int, log: Path) -> dict[Path, str]:
    """tools/rerun_record.py on run_dirs, split over `lanes` processes: {run dir: same | DIFFERENT | skipped |
    error}. Its full output goes to `log`."""
    if not run_dirs:
        return {}
    chunks = [run_dirs[i::lanes] for i in range(lanes) if run_dirs[i::lanes]]
    from rulescape.study import children  # stopped with the study on a signal
    procs = [children.start([sys.executable, str(ROOT / "tools" / "rerun_record.py"), *map(str, chunk)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for chunk in chunks]
    outcome: dict[Path, str] = {d: "error" for d in run_dirs}
    with open(log, "a", encoding="utf-8") as out:
        for proc in procs:
            text, _ = proc.communicate()
            children.wait(proc)
            out.write(text)
            for line in text.splitlines():
                word, _, rest = line.strip().partition(" ")
                if word in ("same", "DIFFERENT", "skipped"):
                    path = Path(rest.strip())
                    for d in run_dirs:
                        if d == path or str(d) == rest.strip():
                            outcome[d] = word
    return outcome
