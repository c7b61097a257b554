"""bench.py in its tiny mode, so that it cannot rot (the numbers themselves are not checked here)."""
import json
import subprocess
import sys

from conftest import ROOT
from modules.rules import RULES


def test_bench_tiny_prints_every_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "bench.py", "--tiny", "--tasks", "dms", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for heading in ("x plain BPTT", "along a default run", "speed-up", "share", "runs/hour"):
        assert heading in result.stdout
    data = json.loads(out.read_text())
    steps = {row["what"]: row for row in data["train_step"]}
    # every registered rule is timed (or skipped with a reason), beside the baseline and Lightning's own loop
    assert set(steps) == {"plain", "lightning loop (empty step)", *RULES}
    assert all(row.get("ms_per_step", 0) > 0 or row["skipped"] for row in steps.values())
    along = data["along_run"][0]
    assert along["steps"] == [0, 10, 20, 30, 40]
    assert along["ours_rel_err"] < 1e-4 and along["pyhessian_rel_err"] < 1e-4
    assert len(along["warm_products"]) == len(along["cold_products"]) == 5
    if not data["machine"]["cuda"]:  # the profile is taken on the CPU only
        assert along["hvp_matmuls_per_step"] == 6.0  # the hand-written product: 6 matrix products per step
    assert along["autograd_hvp_ms"] > 0 and along["autograd_linearise_ms"] > 0
    curvature = data["curvature"][0]
    assert curvature["lanczos_rel_err"] < 1e-4 and curvature["pyhessian_rel_err"] < 1e-4
    assert 0 < data["cadence"][0]["fraction_of_run"] < 1
    assert data["default_run"]["runs_per_hour_2_jobs"] > 0


def test_a_skipped_rule_keeps_the_table_whole_and_rule_warnings_are_said_once(capsys):
    """A skipped rule's error (several lines, a `|`) goes under the table on one line; MDGL's construction
    warning, logged once per rule built, reaches the console once per bench run."""
    import logging

    import bench
    results = {"machine": {"cpu_count": 2, "torch": "x", "threads": 1, "cuda": None},
               "train_step": [{"task": "dms", "what": "plain", "ms_per_step": 1.0, "ratio_vs_plain": 1.0},
                              {"task": "dms", "what": "rtrl", "skipped": "ConfigError: needs 524 MiB | too much\n"
                                                                         "line two\nline three"}],
               "along_run": [], "curvature": [], "cadence": [],
               "default_run": {"single_run_s": 1.0, "two_jobs_s": 1.0, "runs_per_hour_2_jobs": 1.0}}
    bench.print_tables(results)
    out = capsys.readouterr().out.splitlines()
    table = out[out.index("| task | step | ms/step | x plain BPTT |"):]
    table = table[:table.index("")]
    assert len(table) == 4 and all(line.startswith("|") and line.count("|") == 5 for line in table), table
    reason = [line for line in out if line.startswith("skipped: ")]
    assert reason == ["skipped: rtrl on dms: ConfigError: needs 524 MiB / too much line two line three"]

    bench.say_once()
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    log = logging.getLogger("modules.rules.mdgl")
    log.addHandler(handler)
    try:
        for _ in range(5):
            log.warning("mdgl: cell-type-averaged weights are negligible")
    finally:
        log.removeHandler(handler)
        log.filters.clear()
    assert len(seen) == 1
