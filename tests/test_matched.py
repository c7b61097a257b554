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
import torch

from callbacks.stop_at_target import StopAtTarget
from conftest import ROOT, compose_config
from rulescape.errors import ConfigError
from rulescape.run.training import train

QUICK = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=60", "eval_every=5",
         "checkpoint_every=0", "task.train_size=64", "task.test_size=64", "task.batch_size=16",
         "model.hidden_size=16", "curvature.batch_size=16", "curvature.every_n_steps=10",
         "alignment.every_n_steps=5"]


def test_the_stop_is_the_first_step_reaching_the_target_with_sparse_checks(tmp_path):
    """With the default sparse cadence (every 10 steps) the run trains the interval in which it passed the
    target again, checking every step: it stops at a step at or past the target whose previous step was
    checked and found below; re-running to the step before finds it below (a run that ends there scores below
    the target); overshoot = score − target; the replayed run ends in the state of an uninterrupted run to
    that step. A score that touches the target between two sparse checks and falls back unseen is not caught
    (no check sees it): stop_check_every=1 checks every step (test_fidelity's first-crossing test)."""
    quick = QUICK + ["task=pattern"]  # training loss falls smoothly: a target first met between two checks
    every = train(compose_config(quick + ["eval_every=1", "callbacks=none"]), tmp_path / "every")
    loss = dict((int(s), v) for s, v in every["history"]["train_loss"])
    target = (loss[26] + loss[27]) / 2  # first met strictly between two checks (every 10 steps)
    first = min(t for t in loss if t > 0 and loss[t] <= target)
    assert 20 < first < 30 and loss[30] <= target  # passed by the check at 30: the interval is trained again
    stopped = train(compose_config(quick + [f"stop_at_train_loss={target}"]), tmp_path / "stop")
    j = stopped["stopped_at"]
    assert stopped["status"] == "ok" and stopped["stop_exact"] is True and j == stopped["steps"] == first
    assert stopped["stop_score"] == loss[j] <= target < loss[j - 1]
    assert stopped["stop_overshoot"] == pytest.approx(target - stopped["stop_score"], abs=1e-12)  # past: below
    previous, score = stopped["stop_previous_check"]
    assert previous == j - 1 and score == loss[j - 1]
    assert stopped["stop_checks"] < j and 1 < stopped["stop_replayed_steps"] <= 10  # one interval replayed
    assert stopped["history"]["train_loss"][-1] == [j, loss[j]]   # the final evaluation is at the stop step
    steps = [s for s, _ in stopped["history"]["train_loss"]]
    assert steps == sorted(set(steps))  # nothing of the replayed interval recorded twice
    assert not (tmp_path / "stop" / "checkpoints" / "stop_window.ckpt").exists()
    before = train(compose_config(quick + [f"trainer.max_steps={j - 1}", "callbacks=none"]), tmp_path / "before")
    assert before["train_loss"] == loss[j - 1] > target
    plain = train(compose_config(quick + [f"trainer.max_steps={j}", "callbacks=none"]), tmp_path / "plain")
    replayed = torch.load(tmp_path / "stop" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    straight = torch.load(tmp_path / "plain" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert plain["steps"] == j and all(torch.equal(v, straight[k]) for k, v in replayed.items() if torch.is_tensor(v))


def test_the_check_logic_records_the_check_before_the_stop():
    stop = StopAtTarget("stop_at_train_acc", 0.9, check_every=10)
    assert stop.due(10) and not stop.due(11)
    assert not stop.check(10, 0.5) and not stop.check(20, 0.55)
    assert stop.check(30, 0.95)
    summary = stop.summary()
    assert summary["stop_exact"] is False and summary["stop_previous_check"] == [20, 0.55]
    assert summary["stop_overshoot"] == pytest.approx(0.05)
    loss = StopAtTarget("stop_at_train_loss", 0.1, check_every=1)
    assert not loss.check(11, 0.12) and loss.check(12, 0.08)
    assert loss.summary()["stop_exact"] is True and loss.summary()["stop_overshoot"] == pytest.approx(0.02)
    resumed = StopAtTarget("stop_at_train_loss", 0.1, check_every=1)
    resumed.load_state_dict(loss.state_dict())
    assert resumed.summary() == loss.summary()


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


def test_at_steps_from_naming_no_directory_adds_nothing(tmp_path, caplog):
    """A study arm run on its own (or in a sweep without a BPTT arm): its pair's directory does not exist."""
    summary = train(compose_config(QUICK + ["trainer.max_steps=20", f"curvature.at_steps_from={tmp_path}/none*"]),
                    tmp_path / "run")
    assert [s for s, _ in summary["history"]["lambda_max"]] == [0, 10, 20]
    assert "names no run directory" in caplog.text


def test_a_control_runs_exactly_as_many_steps_as_its_rule(tmp_path):
    finished_run(tmp_path / "eprop_dms_seed0", 37)
    summary = train(compose_config(QUICK + ["rule=bptt", f"stop_at_step_from={tmp_path}/eprop_dms_seed*"]),
                    tmp_path / "control")
    assert summary["status"] == "ok" and summary["steps"] == 37
    assert summary["config"]["trainer"]["max_steps"] == 37
    assert summary["history"]["lambda_max"][-1][0] == 37


@pytest.mark.parametrize("override, words", [
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


def test_steps_from_the_committed_study_records():
    """On real records: the second edition's BPTT runs on dms, by glob and one by one."""
    from modules.run_records import stop_step, stop_steps
    runs = sorted((ROOT / "docs" / "study" / "dms" / "runs").glob("bptt_dms_seed*"))
    recorded = sorted({json.loads((d / "summary.json").read_text())["steps"] for d in runs})
    assert len(runs) == 10 and stop_steps(str(runs[0].parent / "bptt_dms_seed*"), "x") == recorded
    assert stop_step(str(runs[3]), "x") == json.loads((runs[3] / "summary.json").read_text())["steps"]
