"""Bad input fails early with one line; divergence, interruption and sweeps lose nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

import rulescape.run.training as run_module
from conftest import ROOT, compose_config
from rulescape.errors import EXIT_CONFIG, EXIT_DIVERGED, ConfigError
from rulescape.run.training import train

QUICK = ["logger=none", "trainer.enable_progress_bar=false",
         "trainer.max_steps=12", "eval_every=4", "checkpoint_every=0",
         "task.train_size=64", "task.test_size=64", "task.batch_size=16", "model.hidden_size=16",
         "curvature.batch_size=16", "curvature.every_n_steps=4", "alignment.every_n_steps=4"]

BAD = [  # (overrides, words the one-line message must contain)
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1", "(0, inf)"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "(0, inf)"]),
    (["optimizer.lr=fast"], ["optimizer.lr='fast'", "number"]),
    (["model.hidden_size=0"], ["model.hidden_size=0", "integer >= 1"]),
    (["model.hidden_size=12.5"], ["model.hidden_size=12.5", "integer"]),
    (["trainer.max_steps=-5"], ["trainer.max_steps=-5", "integer >= 1"]),
    (["model.alpha=1.5"], ["model.alpha=1.5", "(0, 1]"]),
    (["model.activation=sigmoid"], ["model.activation='sigmoid'", "relu", "tanh"]),
    (["task.batch_size=128", "task.train_size=64"], ["task.batch_size=128", "task.train_size=64"]),
    (["task.noise=-1"], ["task.noise=-1"]),
    (["curvature.backend=arpack"], ["curvature.backend='arpack'", "lanczos", "pyhessian"]),
    (["curvature.params=readout"], ["curvature.params='readout'", "recurrent", "all"]),
    (["curvature.tol=0"], ["curvature.tol=0"]),
    (["curvature.k=5", "curvature.max_iter=3"], ["curvature.max_iter=3", "integer >= 5"]),
    (["rule=tbptt", "rule.window=0"], ["rule.window=0", "integer >= 1"]),
    (["rule=bptt_scaled"], ["rule.rho", "rule.rho_from"]),
    (["rule=bptt_scaled", "rule.rho_from=/nonexistent/run"], ["rho_from", "/nonexistent/run"]),
    (["rule=rflo", "rule.feedback_scale=-1"], ["rule.feedback_scale=-1"]),
    (["alignment.every_n_steps=-1"], ["alignment.every_n_steps=-1"]),
    (["trainer=gpu"] if not torch.cuda.is_available() else ["trainer.max_steps=0"],
     ["no CUDA device"] if not torch.cuda.is_available() else ["trainer.max_steps=0"]),
    (["clip_norm=-1"], ["clip_norm=-1", "(0, inf)"]),
    (["stop_at_test_acc=1.5"], ["stop_at_test_acc=1.5", "[0, 1]"]),
    (["ckpt_path=/nonexistent/last.ckpt"], ["ckpt_path='/nonexistent/last.ckpt'", "no such file"]),
]


@pytest.mark.parametrize("overrides,words", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_fails_before_work_with_one_clear_line(tmp_path, overrides, words):
    with pytest.raises(ConfigError) as info:
        train(compose_config(QUICK + overrides), tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == message
    assert not (tmp_path / "checkpoints").exists(), "nothing should have run"


def cli(*args):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("args,word", [(["optimizer.lr=-1"], "optimizer.lr=-1"),
                                       (["model.hiden_size=3"], "unknown config key 'model.hiden_size'")])
def test_cli_bad_input_exit_code_and_single_line(args, word, tmp_path):
    result = cli(*args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], result.stderr


def test_corrupt_and_mismatched_checkpoints_fail_clearly(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x02 not a checkpoint at all")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        train(compose_config(QUICK + [f"ckpt_path={corrupt}"]), tmp_path / "a")
    train(compose_config(QUICK + ["trainer.max_steps=2"]), tmp_path / "b")
    good = tmp_path / "b" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"saved with rule.name='bptt' but this run has rule.name='eprop'"):
        train(compose_config(QUICK + ["rule=eprop", f"ckpt_path={good}"]), tmp_path / "c")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="not a rulescape checkpoint"):
        train(compose_config(QUICK + [f"ckpt_path={foreign}"]), tmp_path / "d")


def test_divergence_is_recorded_and_exits_with_its_code(tmp_path):
    summary = train(compose_config(QUICK + ["optimizer.lr=1e8"]), tmp_path / "a")
    assert summary["status"] == "diverged"
    assert "not finite" in summary["error"] and summary["steps"] < 12
    result = cli(*QUICK, "optimizer.lr=1e8", f"hydra.run.dir={tmp_path / 'b'}")
    assert result.returncode == EXIT_DIVERGED
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "diverged"


def test_multirun_with_one_diverging_and_one_bad_job_completes_the_others(tmp_path):
    """Every job leaves a summary.json: the one whose value the schema refuses says "failed"."""
    sweep = tmp_path / "sweep"
    result = cli("-m", *QUICK, "optimizer.lr=0.03,1e8,fast", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/summary.json"))
    assert statuses == ["diverged", "failed", "ok"]
    assert "optimizer.lr='fast'" in result.stderr


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM at a given step, as a cluster scheduler would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("rule", ["bptt", "eprop"])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, monkeypatch, rule):
    overrides = QUICK + [f"rule={rule}", "model.noise_std=0.1"]
    full = train(compose_config(overrides), tmp_path / "full")

    build = run_module.build_callbacks
    monkeypatch.setattr(run_module, "build_callbacks", lambda cfg, out: build(cfg, out) + [SigtermAt(7)])
    part = train(compose_config(overrides), tmp_path / "part")
    assert part["status"] == "interrupted" and part["steps"] == 7
    monkeypatch.setattr(run_module, "build_callbacks", build)

    ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = train(compose_config(overrides + [f"ckpt_path={ckpt}"]), tmp_path / "resumed")
    assert resumed["status"] == "ok" and resumed["steps"] == 12
    assert resumed["history"] == full["history"]
    weights = [torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
               for d in ("full", "resumed")]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_stop_at_test_acc_ends_the_run_at_the_first_evaluation_reaching_it(tmp_path):
    summary = train(compose_config(QUICK + ["stop_at_test_acc=0.0", "stop_check_every=4"]), tmp_path)
    assert summary["status"] == "ok"
    assert summary["steps"] == summary["stopped_at"] == 4  # step 0 does not count: the first check after training started
    assert summary["history"]["test_acc"][-1][0] == 4


def test_clip_norm_bounds_the_update(tmp_path):
    """With a tiny clip norm one SGD step moves the weights by at most lr * clip_norm."""
    summary = train(compose_config(QUICK + ["trainer.max_steps=1", "clip_norm=1e-3", "optimizer.lr=0.5"]), tmp_path)
    assert summary["status"] == "ok"
    from rulescape.run.training import build_module
    from datamodules import build_datamodule
    cfg = compose_config(QUICK)
    pl.seed_everything(cfg.seed, verbose=False)
    initial = build_module(cfg, build_datamodule("dms", **{k: v for k, v in cfg.task.items()
                                                          if k not in ("name", "alpha")})).net.state_dict()
    final = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    moved = torch.sqrt(sum(((final[f"net.{k}"] - v) ** 2).sum() for k, v in initial.items()
                           if v.is_floating_point() and k in ("W_x", "W_h", "b", "W_out", "b_out")))
    assert 0 < moved <= 0.5 * 1e-3 * (1 + 1e-5)
