"""Matched means matched: a run stops at the first step whose training score reaches the target (and its
record says how far past it), λ1 is measured at exactly the steps where other runs stopped
(curvature.at_steps_from), and a control runs exactly as many steps as the run it imitates
(stop_at_step_from)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from callbacks.stop_at_target import StopAtTarget
from conftest import ROOT, compose_config
from rulescape.errors import ConfigError
from rulescape.run import train

QUICK = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=60", "eval_every=5",
         "checkpoint_every=0", "task.train_size=64", "task.test_size=64", "task.batch_size=16",
         "model.hidden_size=16", "curvature.batch_size=16", "curvature.every_n_steps=10",
         "alignment.every_n_steps=5"]


def test_the_stop_is_the_first_step_reaching_the_target_with_sparse_checks(tmp_path):
    """With the default sparse cadence (every 10 steps) the band of per-step checks stops at a step at or
    past the target whose previous step was checked and found below; re-running to the step before finds
    it below (a run that ends there scores below the target); overshoot = score − target. A score that
    touches the target between two sparse checks and falls back unseen is not caught (no check sees it):
    stop_check_every=1 checks every step (test_fidelity's first-crossing test)."""
    every = train(compose_config(QUICK + ["eval_every=1", "callbacks=none"]), tmp_path / "every")
    acc = dict((int(s), v) for s, v in every["history"]["train_acc"])
    target = max(v for s, v in acc.items() if s <= 40)
    target = target - 1e-9 if target < 1 else 0.99
    stopped = train(compose_config(QUICK + [f"stop_at_train_acc={target}"]), tmp_path / "stop")
    j = stopped["stopped_at"]
    assert stopped["status"] == "ok" and stopped["stop_exact"] is True and j == stopped["steps"]
    assert stopped["stop_score"] == acc[j] >= target and acc[j - 1] < target
    assert stopped["stop_overshoot"] == pytest.approx(stopped["stop_score"] - target, abs=1e-12)
    previous, score = stopped["stop_previous_check"]
    assert previous == j - 1 and score == acc[j - 1]
    assert stopped["stop_checks"] < j  # sparse far from the target: fewer checks than steps
    before = train(compose_config(QUICK + [f"trainer.max_steps={j - 1}", "callbacks=none"]), tmp_path / "before")
    assert before["train_acc"] == acc[j - 1] < target


def test_a_jump_over_the_band_is_recorded_as_not_exact():
    """Between two sparse checks a score may pass the band and the target at once: the record says so."""
    stop = StopAtTarget("stop_at_train_acc", 0.9, check_every=10)
    assert not stop.check(10, 0.5) and not stop.check(20, 0.55)   # 0.05 per interval: band 0.1
    assert not stop.dense()
    assert stop.check(30, 0.95)
    assert stop.summary()["stop_exact"] is False and stop.summary()["stop_previous_check"] == [20, 0.55]
    assert stop.summary()["stop_overshoot"] == pytest.approx(0.05)
    loss = StopAtTarget("stop_at_train_loss", 0.1, check_every=10, margin=0.05)
    assert not loss.check(10, 0.14) and loss.dense()               # within the stated margin: every step
    assert not loss.check(11, 0.12) and loss.check(12, 0.08)
    assert loss.summary()["stop_exact"] is True and loss.summary()["stop_overshoot"] == pytest.approx(0.02)


def test_the_band_follows_the_recent_pace_and_resumes_with_its_state():
    stop = StopAtTarget("stop_at_train_acc", 0.9, check_every=10)
    stop.check(10, 0.5)
    stop.check(20, 0.7)                # 0.2 per interval: band = 2 × 0.2 = 0.4 -> 0.7 is within it
    assert stop.band() == pytest.approx(0.4) and stop.dense() and stop.due(21)
    stop.check(21, 0.9 - 0.5)          # one step's change never sets the pace
    assert stop.changes == [pytest.approx(0.2)]
    for k, v in enumerate([0.41, 0.42, 0.43, 0.44, 0.45], start=3):  # slow intervals: the early pace is forgotten
        stop.check(10 * k, v)
    assert stop.band() == pytest.approx(0.02) and not stop.dense()
    resumed = StopAtTarget("stop_at_train_acc", 0.9, check_every=10)
    resumed.load_state_dict(stop.state_dict())
    assert resumed.summary() == stop.summary() and resumed.band() == stop.band()


def finished_run(folder, steps: int, status: str = "ok"):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"status": status, "steps": steps}))


def test_lambda_is_measured_where_other_runs_stopped(tmp_path):
    finished_run(tmp_path / "runs" / "bptt_dms_seed0", 17)
    finished_run(tmp_path / "runs" / "bptt_dms_seed1", 23)
    summary = train(compose_config(QUICK + ["trainer.max_steps=30",
                                            f"curvature.at_steps_from={tmp_path}/runs/bptt_dms_seed*"]),
                    tmp_path / "eprop")
    steps = [s for s, _ in summary["history"]["lambda_max"]]
    assert {0, 10, 17, 20, 23, 30} == set(steps)


def test_a_control_runs_exactly_as_many_steps_as_its_rule(tmp_path):
    finished_run(tmp_path / "eprop_dms_seed0", 37)
    summary = train(compose_config(QUICK + ["rule=bptt", f"stop_at_step_from={tmp_path}/eprop_dms_seed*"]),
                    tmp_path / "control")
    assert summary["status"] == "ok" and summary["steps"] == 37
    assert summary["config"]["trainer"]["max_steps"] == 37
    assert summary["history"]["lambda_max"][-1][0] == 37


@pytest.mark.parametrize("override, words", [
    ("curvature.at_steps_from={d}/nothing*", ["curvature.at_steps_from", "names no run directory"]),
    ("curvature.at_steps_from={d}/running", ["curvature.at_steps_from", "0 of 1 runs finished"]),
    ("stop_at_step_from={d}/nothing", ["stop_at_step_from", "no finished summary.json"]),
    ("stop_at_step_from={d}/*", ["stop_at_step_from", "run dirs; it must name one"]),
    ("stop_at_step_from={d}/failed", ["stop_at_step_from", "steps=0"]),
    ("curvature.at_steps_wait_s=-1", ["curvature.at_steps_wait_s", "-1"]),
])
def test_bad_values_are_one_line(tmp_path, override, words):
    (tmp_path / "running").mkdir()
    finished_run(tmp_path / "failed", 0, status="failed")
    with pytest.raises(ConfigError) as err:
        train(compose_config(QUICK + [override.format(d=tmp_path)]), tmp_path / "run")
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.slow  # a second process importing torch: ~20 s on a busy 2-core machine
def test_at_steps_from_waits_for_a_run_still_training(tmp_path):
    """The rule's run starts while its BPTT run is still training, waits for its record and measures λ1 at
    exactly BPTT's stop step; the control started beside it runs exactly BPTT's step count."""
    bptt_dir = tmp_path / "bptt_dms_seed0"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "train.py", *QUICK, "trainer.max_steps=40", "stop_at_train_acc=0.7",
                             f"hydra.run.dir={bptt_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        assert not (bptt_dir / "summary.json").exists()  # still starting or training
        rule = train(compose_config(QUICK + ["rule=eprop", f"curvature.at_steps_from={tmp_path}/bptt_dms_seed*",
                                             "curvature.at_steps_wait_s=300"]), tmp_path / "eprop")
        control = train(compose_config(QUICK + ["rule=bptt", f"stop_at_step_from={bptt_dir}",
                                                "stop_at_step_wait_s=300"]), tmp_path / "control")
    finally:
        proc.wait(timeout=300)
    bptt = json.loads((bptt_dir / "summary.json").read_text())
    assert bptt["status"] == "ok"
    assert bptt["steps"] in [s for s, _ in rule["history"]["lambda_max"]]
    assert control["steps"] == bptt["steps"]
