"""Does a recorded run still come out the same on this code? Rerun it from its summary.json config and compare.

    python tools/rerun_record.py docs/study/seqmnist/runs/mdgl_seqmnist_seed0 [more run dirs ...]

Each run is trained again (logger none, into a temporary directory) from the `config` its record holds, and
compared with the record: status, steps and stop step equal; final scores (train/test accuracy, loss, nmse)
and the ρ history within 1e-6; λ1 at every measured step within 2 x curvature.tol relative (each value is
within tol of the true λ1). A run that followed other runs (`*_from`, `rule.rho_from`) is skipped with the
reason: those runs' directories are part of its input. Exit status 0 when every compared run matches.
A record is data from anywhere: every record's config is checked first (no `_target_` but a torch.optim
class at optimizer/scheduler, rulescape/config/targets.py; no interpolation, which would read this machine's
environment; a history and curvature.tol to compare with); a refused or unreadable one is one line, exit 2,
and nothing is rerun.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

SCORES = ("train_acc", "test_acc", "train_loss", "test_loss", "train_nmse", "test_nmse")


def follows_other_runs(config: dict) -> str | None:
    keys = [k for k, v in config.items() if k.endswith("_from") and v]
    if (config.get("rule") or {}).get("rho_from"):
        keys.append("rule.rho_from")
    return ", ".join(keys) or None


def compare(record: dict, rerun: dict) -> tuple[list[str], dict]:
    """What differs between a record and its rerun (empty: the same run), and the largest differences:
    scores and rho absolute, lambda_1 relative."""
    diffs = [f"{k}: {record.get(k)} -> {rerun.get(k)}" for k in ("status", "steps", "stopped_at")
             if record.get(k) != rerun.get(k)]
    largest = {"scores": 0.0, "rho": 0.0, "lambda_max": 0.0}
    for k in SCORES:
        a, b = record.get(k), rerun.get(k)
        if (a is None) != (b is None):
            diffs.append(f"{k}: {a} -> {b}")
        elif a is not None:
            largest["scores"] = max(largest["scores"], abs(a - b))
            if abs(a - b) > 1e-6:
                diffs.append(f"{k}: {a} -> {b}")
    tol = 2 * float(record["config"]["curvature"]["tol"])
    for key, rel in (("lambda_max", tol), ("rho", None)):
        old, new = record["history"].get(key, []), rerun["history"].get(key, [])
        if [s for s, _ in old] != [s for s, _ in new]:
            diffs.append(f"{key}: measured at other steps")
            continue
        for (step, a), (_, b) in zip(old, new):
            off = abs(a - b) / max(abs(a), 1e-30) if rel else abs(a - b)
            largest[key] = max(largest[key], off)
            if off > (rel or 1e-6):
                diffs.append(f"{key} at step {step}: {a} -> {b}")
    return diffs, largest


def read_config(run_dir: Path) -> tuple[dict, dict]:
    """The record and its config, checked as data before anything is built from it: a record is input
    from anywhere, and a `_target_` in it must not run (rulescape/config/targets.py). ConfigError otherwise."""
    from rulescape.config.targets import check_targets
    from rulescape.errors import ConfigError
    path = run_dir / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (a run directory holds a summary.json)")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not a readable run record ({type(err).__name__})") from None
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict) or not config:
        raise ConfigError(f"{path} holds no run config")
    check_targets(config, where=str(path))
    interpolated = next(((k, v) for k, v in flat_items(config) if isinstance(v, str) and "${" in v), None)
    if interpolated:  # a record's config is resolved: an interpolation would read this machine (oc.env)
        raise ConfigError(f"{path}: config.{interpolated[0]}={interpolated[1]!r} is refused: a record's config is "
                          "resolved, and an interpolation in it would be resolved against this machine's "
                          "environment")
    if follows_other_runs(config):  # skipped, never rerun
        return record, config
    if not isinstance(record.get("history"), dict):
        raise ConfigError(f"{path} has no history (the rerun is compared with it)")
    tol = (config.get("curvature") or {}).get("tol") if isinstance(config.get("curvature"), dict) else None
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise ConfigError(f"{path}: config.curvature.tol is {tol!r}; the rerun's lambda_1 is compared within it")
    return record, config


def flat_items(node, prefix: str = ""):
    """(dotted key, value) for every leaf of a plain config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from flat_items(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from flat_items(value, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), node


def rerun(run_dir: Path) -> tuple[str, list[str]]:
    from rulescape.run.training import train
    record, config = read_config(run_dir)
    why = follows_other_runs(config)
    if why:
        return "skipped", [f"follows other runs ({why})"]
    cfg = OmegaConf.create(config)
    cfg.logger = {"name": "none"}
    cfg.ckpt_path = None
    cfg.trainer.enable_progress_bar = False
    with tempfile.TemporaryDirectory() as tmp:
        again = train(cfg, Path(tmp) / "rerun")
    diffs, largest = compare(record, again)
    note = (f"largest differences: scores {largest['scores']:.1e}, rho {largest['rho']:.1e}, "
            f"lambda_1 {largest['lambda_max']:.1e} relative")
    return ("same" if not diffs else "DIFFERENT"), diffs + [note]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding a summary.json")
    args = parser.parse_args(argv)
    from rulescape.errors import EXIT_CONFIG, ConfigError
    try:  # every record is checked before the first is rerun: a bad one is one line, exit 2, nothing run
        for run_dir in args.runs:
            read_config(run_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    failed = 0
    for run_dir in args.runs:
        try:
            outcome, details = rerun(run_dir)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CONFIG
        failed += outcome == "DIFFERENT"
        print(f"{outcome:9s} {run_dir}" + "".join(f"\n          {d}" for d in details), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
