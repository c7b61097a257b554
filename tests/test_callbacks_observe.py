"""Measurements observe and never steer: the same seed with and without curvature/alignment gives
bit-identical final weights, and a run interrupted and resumed from last.ckpt has the same complete
histories (and weights) as an uninterrupted one."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from callbacks import CALLBACKS
from conftest import compose_config
from rulescape.run.training import train

QUICK = ["logger=none", "trainer.max_steps=7", "eval_every=3", "checkpoint_every=0",
         "task.train_size=64", "task.test_size=64", "task.batch_size=16", "model.hidden_size=12",
         "model.noise_std=0.05", "curvature.batch_size=16", "curvature.every_n_steps=3",
         "alignment.every_n_steps=2", "curvature.k=2", "curvature.trace=true", "curvature.trace_samples=3",
         "curvature.flatness=true"]
MEASURED = "callbacks.enabled=[generalization,curvature,alignment,theory]"


def final_weights(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["global_step"]


@pytest.mark.parametrize("extra", [["rule=eprop"], ["rule=bptt", "curvature.backend=pyhessian",
                                                    "curvature.params=all"]])
def test_measurements_do_not_change_the_trajectory(tmp_path, extra):
    plain = train(compose_config(QUICK + extra + ["callbacks.enabled=[generalization]"]), tmp_path / "plain")
    measured = train(compose_config(QUICK + extra + [MEASURED]), tmp_path / "measured")
    assert plain["status"] == measured["status"] == "ok"
    assert [p[0] for p in measured["history"]["lambda_max"]] == [0, 3, 6, 7]
    assert [p[0] for p in measured["history"]["rho"]] == [0, 2, 4, 6]
    if "rule=bptt" in extra:
        assert measured["rho_mean"] == 1.0
    a, step_a = final_weights(tmp_path / "plain")
    b, step_b = final_weights(tmp_path / "measured")
    assert step_a == step_b == 7
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class InterruptAt(pl.Callback):
    """Raises KeyboardInterrupt at the start of step `step` (after the measurements of that step)."""
    step = 5

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_resumed_run_has_the_same_histories(tmp_path, monkeypatch):
    overrides = QUICK + ["rule=eprop"]
    whole = train(compose_config(overrides + [MEASURED]), tmp_path / "whole")

    monkeypatch.setitem(CALLBACKS, "interrupt_at", InterruptAt)
    first = train(compose_config(overrides + ["callbacks.enabled=[generalization,curvature,alignment,theory,"
                                              "interrupt_at]"]), tmp_path / "cut")
    assert first["status"] == "interrupted" and first["steps"] == InterruptAt.step
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    # resumed into its own directory: Lightning's ModelCheckpoint would write last-v1.ckpt beside last.ckpt
    resumed = train(compose_config(overrides + [MEASURED, f"ckpt_path={last}"]), tmp_path / "resumed")

    assert resumed["status"] == "ok" and resumed["steps"] == whole["steps"] == 7
    assert resumed["history"] == whole["history"]
    assert {"lambda_max", "curvature_lambda_2", "curvature_trace", "curvature_rel_flatness", "rho",
            "align_cos", "align_e_ratio", "theory_stability", "theory_lambda_bound"} <= set(whole["history"])
    a, _ = final_weights(tmp_path / "whole")
    b, step = final_weights(tmp_path / "resumed")
    assert step == 7
    assert all(torch.equal(a[k], b[k]) for k in a)
