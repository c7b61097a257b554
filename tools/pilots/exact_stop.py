"""Table of the exact matched point's pilot (tools/pilots/exact_stop.sh): per run the stop step, the score
there, the overshoot past the target, whether the step before was checked (exact), the checks made and their
cost against the whole training loop.

    python tools/pilots/exact_stop.py outputs/pilots/exact_stop
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str) -> None:
    print("| run | target | stopped at | score | overshoot | exact | checks | replayed steps | check s | loop s | "
          "checks' share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted(Path(root).glob("*/summary.json")):
        r = json.loads(path.read_text())
        t = r.get("timing") or {}
        check_s = (t.get("measure_s") or {}).get("stopattarget")
        loop_s = t.get("loop_s")
        share = f"{check_s / loop_s:.1%}" if check_s is not None and loop_s else "n/a"
        target = (r.get("stop_target") or {}).get("target")
        over = r.get("stop_overshoot")
        score = r.get("stop_score")
        print(f"| {path.parent.name} | {target} | {r.get('stopped_at')} | "
              f"{'n/a' if score is None else f'{score:.4g}'} | "
              f"{'n/a' if over is None else f'{over:.4g}'} | {r.get('stop_exact')} | {r.get('stop_checks')} | "
              f"{r.get('stop_replayed_steps')} | {check_s} | {loop_s} | {share} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/pilots/exact_stop")
