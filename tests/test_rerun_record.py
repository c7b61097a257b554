"""tools/rerun_record.py: a recorded run, trained again from its summary.json config on this code, is
the same run; a record that does not match (a tampered step count, a shifted lambda_1) is reported."""
from __future__ import annotations

import copy
import json
import sys

from conftest import ROOT, compose_config
from rulescape.run.training import train

sys.path.insert(0, str(ROOT / "tools"))
import rerun_record  # noqa: E402

QUICK = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=6", "eval_every=3",
         "checkpoint_every=0", "task.train_size=64", "task.test_size=64", "task.batch_size=16",
         "model.hidden_size=16", "curvature.batch_size=16", "curvature.every_n_steps=3",
         "alignment.every_n_steps=3", "rule=eprop"]


def test_a_rerun_of_a_record_is_the_same_run_and_a_tampered_record_is_not(tmp_path):
    run = tmp_path / "run"
    train(compose_config(QUICK), run)
    outcome, details = rerun_record.rerun(run)
    assert outcome == "same", details

    record = json.loads((run / "summary.json").read_text())
    again = copy.deepcopy(record)
    assert rerun_record.compare(record, again)[0] == []
    again["steps"] += 1
    again["history"]["lambda_max"][-1][1] *= 1.001  # 1e-3 relative: outside 2 x tol (1e-4)
    diffs = rerun_record.compare(record, again)[0]
    assert any(d.startswith("steps") for d in diffs) and any(d.startswith("lambda_max at step") for d in diffs)


def test_a_run_that_followed_other_runs_is_skipped_with_the_reason(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    record = {"config": {"stop_at_test_acc_from": "multirun/x/*", "rule": {"rho_from": None}}}
    (run / "summary.json").write_text(json.dumps(record))
    outcome, details = rerun_record.rerun(run)
    assert outcome == "skipped" and "stop_at_test_acc_from" in details[0]
