"""Print one line per pilot run (summary.json under the given folders): design, rule, seed, status, steps,
train/test/shift acc, gap, wall time; then per (design, rule) a markdown row: mean ± std (ddof 1) over the
ok runs, min test accuracy, and counts (learned: test accuracy >= chance + 0.15; diverged).
    python tools/pilots/table.py <folder with one run directory per run> ..."""
import statistics
import json
import sys
from collections import defaultdict
from pathlib import Path

CHANCE = {"dms": 0.5, "seqmnist": 0.1}
rows = defaultdict(list)
for root in sys.argv[1:]:
    for p in sorted(Path(root).glob("*/summary.json")):
        s = json.loads(p.read_text())
        design = p.parent.name.rsplit("_seed", 1)[0]
        print(f"{p.parent.name:45s} {s['status']:9s} steps={s['steps']:5d} train={s['train_acc']} "
              f"test={s['test_acc']} shift={s.get('shift_acc')} gap={s['gap_acc']} "
              f"loss={s['train_loss']:.4g} wall={s['wall_time_s']:.0f}s")
        rows[design].append(s)
print()
print("| arm | n | train_acc | test_acc | min test_acc | shift_acc | gap_acc | learned | diverged | steps | wall s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for design, runs in rows.items():
    chance = CHANCE.get(runs[0]["task"], 0.5)
    ok = [r for r in runs if r["status"] == "ok"]
    def mean(k):
        v = [r[k] for r in ok if r.get(k) is not None]
        if not v:
            return "-"
        return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
    learned = sum(1 for r in ok if (r["test_acc"] or 0) >= chance + 0.15)
    diverged = sum(1 for r in runs if r["status"] == "diverged")
    steps = sum(r["steps"] for r in runs) / len(runs)
    wall = sum(r["wall_time_s"] for r in runs) / len(runs)
    low = min((r["test_acc"] for r in ok if r.get("test_acc") is not None), default=None)
    low = "-" if low is None else f"{low:.3f}"
    print(f"| {design} | {len(runs)} | {mean('train_acc')} | {mean('test_acc')} | {low} | {mean('shift_acc')} | "
          f"{mean('gap_acc')} | {learned}/{len(runs)} | {diverged} | {steps:.0f} | {wall:.0f} |")
