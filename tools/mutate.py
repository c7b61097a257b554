"""Mutation check: does the fast suite fail when a promise breaks?

Each mutation in tools/mutations.py replaces one exact snippet of the source (it must occur exactly once)
in a scratch copy of the tree, then runs pytest on the test files expected to catch it
(`-x -q -p no:cacheprovider`, the fast suite's selection from pytest.ini). A failing run means the
mutation was caught; a passing one means it SURVIVED; a snippet not found exactly once is STALE.

    python tools/mutate.py                      # every mutation
    python tools/mutate.py --only name1,name2   # some of them
    python tools/mutate.py --jobs 2             # two at a time (one per core)
    python tools/mutate.py --list               # names, files and the tests expected to catch each

Exit status 0 when every mutation was caught, 1 when any survived or is stale.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from mutations import MUTATIONS  # noqa: E402

SKIP = shutil.ignore_patterns(".venv", ".git", "outputs", "multirun", "wandb", "__pycache__",
                              ".pytest_cache", "data", "*.ckpt", "lightning_logs")


def check_snippet(m: dict) -> str | None:
    """None when the mutation applies, else why it is stale."""
    path = ROOT / m["file"]
    if not path.is_file():
        return f"{m['file']}: no such file"
    count = path.read_text().count(m["old"])
    if count != 1:
        return f"{m['file']}: snippet found {count} times (must be exactly once)"
    missing = [t for t in m["tests"] if not (ROOT / t.split("::")[0]).is_file()]
    if missing:
        return f"no such test file: {', '.join(missing)}"
    return None


def run_one(m: dict, timeout: float) -> tuple[str, float, str]:
    """(outcome, seconds, detail) for one mutation."""
    start = time.time()
    stale = check_snippet(m)
    if stale:
        return "STALE", 0.0, stale
    with tempfile.TemporaryDirectory(prefix=f"mutate-{m['name']}-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=SKIP, symlinks=True)
        target = tree / m["file"]
        target.write_text(target.read_text().replace(m["old"], m["new"], 1))
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m["tests"]]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            result = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return "caught", time.time() - start, f"timed out after {timeout:.0f} s (a hang fails CI too)"
    seconds = time.time() - start
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    tail = lines[-1] if lines else result.stderr.strip()[-200:]
    failed = next((line for line in lines if line.startswith(("FAILED tests", "ERROR tests"))), None)
    if result.returncode == 0:
        return "SURVIVED", seconds, tail
    if result.returncode == 5:  # no tests collected: the test list is wrong, not a catch
        return "STALE", seconds, f"no tests collected: {tail}"
    return "caught", seconds, (failed or tail)[:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated mutation names")
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at a time (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation's pytest run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)

    names = [m["name"] for m in MUTATIONS]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        print(f"duplicate mutation names: {', '.join(sorted(duplicates))}", file=sys.stderr)
        return 1
    chosen = MUTATIONS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
            return 1
        chosen = [m for m in MUTATIONS if m["name"] in wanted]
    if args.list:
        for m in chosen:
            print(f"{m['name']:28s} {m['file']:34s} {' '.join(m['tests'])}\n{'':28s} {m['why']}")
        return 0

    start = time.time()
    counts = {"caught": 0, "SURVIVED": 0, "STALE": 0}
    width = max(len(m["name"]) for m in chosen)

    def report(m, outcome):
        status, seconds, detail = outcome
        counts[status] += 1
        print(f"{status:8s} {m['name']:{width}s} {seconds:6.1f} s  {m['file']}: {m['why']}"
              + f"\n{'':9s}{detail}", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [(m, pool.submit(run_one, m, args.timeout)) for m in chosen]
        for m, future in futures:
            report(m, future.result())
    total = time.time() - start
    print(f"\n{len(chosen)} mutations: {counts['caught']} caught, {counts['SURVIVED']} survived, "
          f"{counts['STALE']} stale; {total:.0f} s with {args.jobs} job(s)")
    return 0 if counts["SURVIVED"] == 0 and counts["STALE"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
