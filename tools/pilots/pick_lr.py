"""The per-rule learning rate (the *_own_lr arms): from lr-grid runs named lr<lr>_<rule>_seed<s> (summary.json
in each), per rule the lr with the lowest mean final training loss among the lrs at which no seed diverged
(ties: the larger lr). Prints a markdown table of the grid and the task.rule_lr map to paste into conf/task.
    python tools/pilots/pick_lr.py outputs/pilots/dms_lr"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

runs = defaultdict(list)  # (rule, lr) -> summaries
for p in sorted(Path(sys.argv[1]).glob("lr*_seed*/summary.json")):
    lr, rule = p.parent.name.rsplit("_seed", 1)[0][2:].split("_", 1)
    runs[(rule, float(lr))].append(json.loads(p.read_text()))

print("| rule | lr | n | diverged | train_loss | train_acc | test_acc |")
print("|---|---|---|---|---|---|---|")
chosen = {}
for rule in dict.fromkeys(r for r, _ in runs):
    best = None
    for lr in sorted(l for r, l in runs if r == rule):
        group = runs[(rule, lr)]
        diverged = sum(s["status"] == "diverged" for s in group)
        ok = [s for s in group if s["status"] == "ok"]
        loss = statistics.mean(s["train_loss"] for s in ok) if ok else float("nan")
        acc = statistics.mean(s["train_acc"] for s in ok) if ok else float("nan")
        test = statistics.mean(s["test_acc"] for s in ok) if ok else float("nan")
        print(f"| {rule} | {lr:g} | {len(group)} | {diverged} | {loss:.4f} | {acc:.3f} | {test:.3f} |")
        if not diverged and ok and (best is None or loss <= best[1]):
            best = (lr, loss)
    chosen[rule] = best[0] if best else None
print()
print("rule_lr:")
for rule, lr in chosen.items():
    print(f"  {rule}: {lr:g}" if lr is not None else f"  {rule}: null   # every lr diverged")
