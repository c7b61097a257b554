"""The first vertical slice: configs compose, a run writes its record, seeds reproduce, bad names fail
with one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, compose_config
from rulescape.config.schema import check_schema
from rulescape.config.validate import validate
from rulescape.run.cli import group_options
from rulescape.run.training import train

GROUPS = ["task", "model", "rule", "optimizer", "scheduler", "trainer", "logger", "callbacks"]
NEEDS = {"bptt_scaled": ["rule.rho=0.5"], "matched_step": ["rule.rho=0.5"]}  # options that need a value to be a valid run
QUICK = ["logger=none", "trainer.enable_progress_bar=false",
         "trainer.max_steps=6", "eval_every=3", "checkpoint_every=0",
         "task.train_size=64", "task.test_size=64", "task.batch_size=16", "model.hidden_size=16",
         "curvature.batch_size=16", "curvature.every_n_steps=3", "alignment.every_n_steps=3"]

RECORD_FIELDS = {"status", "rule", "task", "seed", "steps", "lr", "config", "train_acc", "test_acc",
                 "gap_acc", "train_loss", "test_loss", "gap_loss", "lambda_max", "rho_mean", "history",
                 "wall_time_s", "timing", "versions"}


@pytest.mark.parametrize("group", GROUPS + ["experiment"])
def test_every_config_group_option_composes_and_validates(group):
    options = group_options(group)
    if group != "experiment":
        assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose_config([f"{group}={option}", *NEEDS.get(option, [])])
        if group != "experiment":  # presets are global: they leave no `experiment` node
            assert cfg[group] is not None
        if group != "trainer" or option == "cpu":  # gpu/ddp compose but need hardware to run
            validate(check_schema(cfg))  # the declarations, then the rules between keys


def test_short_run_writes_the_documented_record(tmp_path):
    summary = train(compose_config(QUICK), tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert RECORD_FIELDS <= set(summary)
    assert summary["status"] == "ok" and summary["steps"] == 6
    assert (summary["rule"], summary["task"], summary["seed"]) == ("bptt", "dms", 0)
    assert summary["lr"] == pytest.approx(0.1)  # dms recommends plain SGD at 0.1
    assert 0.0 <= summary["train_acc"] <= 1.0 and 0.0 <= summary["test_acc"] <= 1.0
    assert summary["gap_acc"] == pytest.approx(summary["train_acc"] - summary["test_acc"])
    assert summary["gap_loss"] == pytest.approx(summary["test_loss"] - summary["train_loss"])
    assert [p[0] for p in summary["history"]["train_acc"]] == [0, 3, 6]
    assert summary["rho_mean"] == 1.0  # bptt is the exact gradient
    assert summary["config"]["model"]["hidden_size"] == 16
    assert set(summary["versions"]) == {"torch", "lightning", "rulescape"}
    timing = summary["timing"]  # where the run's time went: every measurement callback, and their share
    assert set(timing["measure_s"]) == {"generalization", "curvature", "alignment", "theory"}
    assert all(v >= 0 for v in timing["measure_s"].values()) and timing["measure_s"]["curvature"] > 0
    assert timing["measure_share"] == pytest.approx(sum(timing["measure_s"].values()) / timing["loop_s"], abs=0.01)  # of rounded values
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_same_seed_gives_identical_summaries(tmp_path):
    a = train(compose_config(QUICK + ["seed=3"]), tmp_path / "a")
    b = train(compose_config(QUICK + ["seed=3"]), tmp_path / "b")
    c = train(compose_config(QUICK + ["seed=4"]), tmp_path / "c")
    for s in (a, b, c):
        s.pop("wall_time_s"), s.pop("timing")
    assert a == b
    assert a["history"]["train_loss"] != c["history"]["train_loss"]


def run_cli(*args, env=None):
    env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("group,bad", [("rule", "foo"), ("task", "mnist"), ("optimizer", "lbfgs")])
def test_unknown_group_option_fails_with_one_line_listing_valid_names(group, bad):
    result = run_cli(f"{group}={bad}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"unknown {group} '{bad}'" in lines[0]
    for option in group_options(group):
        assert option in lines[0]


def test_cli_run_with_offline_wandb_prints_summary_and_exits_zero(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*QUICK[1:], "logger=wandb", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[ok] rule=bptt task=dms seed=0" in result.stdout
    assert json.loads((out / "summary.json").read_text())["status"] == "ok"
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, "wandb should have written an offline run"
    assert (runs[0] / "files" / "summary.json").is_file(), "the record should travel with `wandb sync`"


def test_float64_runs_train_in_double(tmp_path):
    summary = train(compose_config(QUICK + ["float64=true", "rule=eprop"]), tmp_path)
    assert summary["status"] == "ok", summary["error"]
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state["net.W_h"].dtype == torch.float64


def test_resume_into_the_same_directory_keeps_one_last_checkpoint(tmp_path):
    train(compose_config(QUICK + ["trainer.max_steps=3"]), tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    summary = train(compose_config(QUICK + [f"ckpt_path={ckpt}"]), tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 6
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    assert torch.load(ckpt, weights_only=False)["global_step"] == 6


def test_stepwise_readout_computes_the_same_outputs_and_gradients():
    from modules.rnn import RateRNN
    torch.manual_seed(0)
    net = RateRNN(3, 9, 2, alpha=0.3).double()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    y1, r1 = net(x)
    y2, r2 = net(x, stepwise_readout=True)
    assert torch.equal(r1, r2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    g1 = torch.autograd.grad(y1.square().sum(), [net.W_h, net.W_x])
    g2 = torch.autograd.grad(y2.square().sum(), [net.W_h, net.W_x])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha,activation,dale,bias", [(0.3, "relu", False, True), (1.0, "tanh", True, False),
                                                       (0.5, "softplus", True, True)])
def test_predict_is_the_forward_readout_at_the_asked_steps(alpha, activation, dale, bias):
    """Evaluation's graph-free forward (RateRNN.predict) against forward(): the same outputs at the steps
    asked for (float64, to rounding), zeros elsewhere; and evaluate() scores as a plain forward pass would."""
    from callbacks.generalization import evaluate
    from datamodules.base import TrialSet
    from modules.objective import task_scores
    from modules.rnn import RateRNN
    torch.manual_seed(1)
    net = RateRNN(3, 9, 4, alpha=alpha, activation=activation, dale=dale, bias=bias, noise_std=0.5).double()
    x = torch.randn(6, 7, 3, dtype=torch.float64)
    want, _ = net(x)
    torch.testing.assert_close(net.predict(x), want, rtol=1e-12, atol=1e-12)
    steps = torch.tensor([2, 6])
    got = net.predict(x, steps)
    torch.testing.assert_close(got[:, steps], want[:, steps], rtol=1e-12, atol=1e-12)
    assert not got[:, [0, 1, 3, 4, 5]].any()
    y = torch.randint(0, 4, (6, 7))
    mask = torch.zeros(6, 7, dtype=torch.float64)
    mask[:, 6], mask[:3, 2] = 1.0, 1.0
    scores = evaluate(net, TrialSet(x, y, mask), "ce", batch_size=4)
    plain = task_scores("ce", want, y, mask)
    assert scores["loss"] == pytest.approx(float(plain["loss_sum"] / plain["count"]), rel=1e-12)
    assert scores["acc"] == pytest.approx(float(plain["correct"] / plain["count"]), rel=1e-12)


def test_smoke_preset_runs_every_measurement(tmp_path):
    summary = train(compose_config(["experiment=smoke", "logger=none", "rule=mdgl"]), tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 20
    for key in ("lambda_max", "rho", "train_acc", "test_acc", "theory_stability", "align_cos"):
        assert summary["history"][key], key
    assert summary["lambda_max"] == summary["history"]["lambda_max"][-1][1]
    assert summary["rho_mean"] == pytest.approx(sum(v for _, v in summary["history"]["rho"]) /
                                                len(summary["history"]["rho"]))


def test_experiment_presets_override_the_primary_config():
    cfg = compose_config(["experiment=smoke"])
    assert cfg.trainer.max_steps == 20 and cfg.curvature.every_n_steps == 10 and cfg.eval_every == 10
    assert compose_config(["experiment=lr_decay"]).optimizer.lr == 0.3
