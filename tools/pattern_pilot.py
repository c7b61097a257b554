"""Pilot runs for the pattern task, one after another in one process (docs/study/pilots-pattern.md).

    python tools/pattern_pilot.py OUT --rules bptt,eprop --lrs 0.03,0.1 --seeds 100,101 --steps 1000 [override ...]

Each (rule, lr, seed) trains with train.py's own `train` (logger=none, the generalization callback unless
an override says otherwise) into OUT/<rule>_lr<lr>_seed<seed>/ and appends one line to OUT/results.tsv:
rule, lr, seed, status, steps, train_loss, test_loss, gap_loss, train_nmse, test_nmse, wall_time_s.
Runs already in results.tsv are skipped, so a cut-off pilot resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hydra import compose, initialize_config_dir  # noqa: E402

from rulescape.run import train  # noqa: E402

FIELDS = ("status", "steps", "train_loss", "test_loss", "gap_loss", "train_nmse", "test_nmse", "wall_time_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--lrs", default="")
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--steps", type=int, required=True)
    args, overrides = ap.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "results.tsv"
    done = set()
    if table.exists():
        done = {tuple(line.split("\t")[:3]) for line in table.read_text().splitlines()[1:]}
    else:
        table.write_text("\t".join(("rule", "lr", "seed") + FIELDS) + "\n")
    conf = Path(__file__).resolve().parents[1] / "conf"
    lrs = args.lrs.split(",") if args.lrs else [""]
    for rule in args.rules.split(","):
        for lr in lrs:
            for seed in args.seeds.split(","):
                if (rule, lr or "task", seed) in done:
                    continue
                with initialize_config_dir(str(conf), version_base=None):
                    cfg = compose("config", overrides=[
                        "task=pattern", f"rule={rule}", f"seed={seed}", f"trainer.max_steps={args.steps}",
                        "logger=none", "callbacks.enabled=[generalization]", "checkpoint_every=0",
                        "trainer.enable_progress_bar=false", *( [f"optimizer.lr={lr}"] if lr else []), *overrides])
                run_dir = args.out / f"{rule}_lr{lr or 'task'}_seed{seed}"
                summary = train(cfg, run_dir)
                row = [rule, lr or "task", seed] + [str(summary.get(k)) for k in FIELDS]
                with table.open("a") as f:
                    f.write("\t".join(row) + "\n")
                print("\t".join(row), flush=True)


if __name__ == "__main__":
    main()
