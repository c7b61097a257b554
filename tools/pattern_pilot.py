"""Pilot runs for the pattern task, one after another in one process (docs/study/pilots-pattern.md).

    python tools/pattern_pilot.py OUT --rules bptt,eprop --lrs 0.03,0.1 --seeds 100,101 --steps 1000 [override ...]

Each (rule, lr, seed) trains with train.py's own `train` (logger=none, the generalization callback unless
an override says otherwise) into OUT/<rule>_lr<lr>_seed<seed>/ and appends one line to OUT/results.tsv:
rule, lr, seed, status, steps, train_loss, test_loss, gap_loss, train_nmse, test_nmse, wall_time_s.
Runs already in results.tsv are skipped, so a cut-off pilot resumes where it stopped.

    python tools/pattern_pilot.py OUT --table [--learned-nmse 0.5]

prints a markdown table per (rule, lr) of OUT/results.tsv: runs, diverged, learned (test nmse <= the
criterion), mean +- std of train/test nmse and gap, the one-sided one-sample tests of gap > 0 (Wilcoxon
signed-rank, exact; and t), and the mean wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hydra import compose, initialize_config_dir  # noqa: E402

from rulescape.run.training import train  # noqa: E402

def summary_table(out: Path, learned_nmse: float) -> None:
    import numpy as np
    from scipy import stats

    lines = (out / "results.tsv").read_text().splitlines()
    head, rows = lines[0].split("\t"), [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    assert head[:3] == ["rule", "lr", "seed"]
    print("| rule | lr | runs | diverged | learned (test nmse <= %g) | train loss (MSE) | train nmse | test nmse | gap (MSE) "
          "| p(gap > 0), Wilcoxon | p(gap > 0), t | wall s / run |" % learned_nmse)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in dict.fromkeys((r["rule"], r["lr"]) for r in rows):
        group = [r for r in rows if (r["rule"], r["lr"]) == key]
        ok = [r for r in group if r["status"] == "ok"]
        num = lambda name: np.array([float(r[name]) for r in ok])  # noqa: E731
        gap = num("gap_loss")
        learned = int((num("test_nmse") <= learned_nmse).sum()) if ok else 0
        p_w = stats.wilcoxon(gap, alternative="greater").pvalue if len(ok) > 1 else float("nan")
        p_t = stats.ttest_1samp(gap, 0.0, alternative="greater").pvalue if len(ok) > 1 else float("nan")
        def ms(a, digits=3):
            if len(a) == 0:
                return "—"
            return f"{a.mean():.{digits}f}" + (f" ± {a.std(ddof=1):.{digits}f}" if len(a) > 1 else "")
        wall = np.mean([float(r["wall_time_s"]) for r in group])
        print(f"| {key[0]} | {key[1]} | {len(group)} | {len(group) - len(ok)} | {learned} / {len(group)} | "
              f"{ms(num('train_loss'), 4)} | {ms(num('train_nmse'))} | {ms(num('test_nmse'))} | {ms(gap, 4)} | {p_w:.3g} | {p_t:.3g} | {wall:.0f} |")


FIELDS = ("status", "steps", "train_loss", "test_loss", "gap_loss", "train_nmse", "test_nmse", "wall_time_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--learned-nmse", type=float, default=0.5)
    ap.add_argument("--rules")
    ap.add_argument("--lrs", default="")
    ap.add_argument("--seeds")
    ap.add_argument("--steps", type=int)
    args, overrides = ap.parse_known_args()
    if args.table:
        return summary_table(args.out, args.learned_nmse)
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
