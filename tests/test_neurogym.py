"""The neurogym task: trials against neurogym's own (same seeded env, the same ob/gt), the decision-period mask,
end alignment of trials of different lengths, the train/test protocol (same seed same data, disjoint test),
neurogym's trial score against the env's own step() scoring, one-line errors, and short bptt/eprop runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import compose_config
from datamodules.neurogym import NeurogymDataModule, make_env, neurogym_performance
from rulescape.errors import ConfigError
from rulescape.run.training import train

SMALL = dict(train_size=64, test_size=64, batch_size=32)


def neurogym_dm(**kw) -> NeurogymDataModule:
    dm = NeurogymDataModule(**{**SMALL, **kw})
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def dms():
    return neurogym_dm(env="DelayMatchSample-v0", seed=0)


def reference_trials(env_id: str, seed: int, n: int, **kwargs) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """n trials straight from a neurogym env seeded like the training env: (ob, gt, start/end of periods)."""
    env = make_env(env_id, 100.0, kwargs)
    env.seed(seed)
    out = []
    for _ in range(n):
        env.new_trial()
        out.append((env.ob.copy(), env.gt.copy(), {p: (env.start_ind[p], env.end_ind[p]) for p in env.start_ind}))
    return out


def test_delaymatchsample_trials_are_neurogyms_with_the_decision_period_as_mask(dms):
    assert (dms.input_size, dms.output_size, dms.loss, dms.has_accuracy, dms.T) == (3, 3, "ce", True, 32)
    for trials, n in ((dms.train_set, 64), (dms.test_set, 64)):
        assert trials.x.shape == (n, 32, 3) and trials.x.dtype == torch.float32
        assert trials.y.shape == (n, 32) and trials.y.dtype == torch.int64
        assert trials.mask.shape == (n, 32) and trials.mask.dtype == torch.float32
    for i, (ob, gt, periods) in enumerate(reference_trials("DelayMatchSample-v0", 0, 64)):
        assert torch.equal(dms.train_set.x[i], torch.from_numpy(ob))
        assert torch.equal(dms.train_set.y[i], torch.from_numpy(gt).long())
        start, end = periods["decision"]
        expected = torch.zeros(32)
        expected[start:end] = 1.0
        assert torch.equal(dms.train_set.mask[i], expected)                # 900 ms decision = the last 9 steps
    decision = dms.train_set.y[dms.train_set.mask > 0]
    assert set(decision.tolist()) == {1, 2} and (dms.train_set.y[dms.train_set.mask == 0] == 0).all()


def test_trials_of_different_lengths_are_aligned_at_their_end():
    dm = neurogym_dm(env="ContextDecisionMaking-v0", seed=1)
    reference = reference_trials("ContextDecisionMaking-v0", 2, 64)
    lengths = [len(ob) for ob, _, _ in reference]
    assert len(set(lengths)) > 1 and dm.T >= max(lengths)
    for i, (ob, gt, _) in enumerate(reference):
        k = len(ob)
        assert torch.equal(dm.train_set.x[i, dm.T - k:], torch.from_numpy(ob))
        assert (dm.train_set.x[i, :dm.T - k] == 0).all() and (dm.train_set.mask[i, :dm.T - k] == 0).all()
    assert (dm.train_set.mask[:, -1] == 1).all()                           # the decision ends every trial
    every = neurogym_dm(env="ContextDecisionMaking-v0", seed=1, loss_on="all")
    steps = torch.tensor([[t >= every.T - k for t in range(every.T)] for k in lengths]).float()
    assert torch.equal(every.train_set.mask, steps)                        # every trial step, padding excluded
    cut = neurogym_dm(env="ContextDecisionMaking-v0", seed=1, T=10)
    assert cut.train_set.x.shape[1] == 10 and torch.equal(cut.train_set.x, dm.train_set.x[:, -10:])


def test_same_seed_same_trials_other_seed_other_trials_and_a_disjoint_test_set(dms):
    again, other = neurogym_dm(env="DelayMatchSample", seed=0), neurogym_dm(env="DelayMatchSample", seed=1)
    for name in ("x", "y", "mask"):
        assert torch.equal(getattr(again.train_set, name), getattr(dms.train_set, name))
        assert torch.equal(getattr(again.test_set, name), getattr(dms.test_set, name))
    assert not torch.equal(other.train_set.x, dms.train_set.x)
    train = {row.numpy().tobytes() for row in dms.train_set.x}
    assert not any(row.numpy().tobytes() in train for row in dms.test_set.x)
    assert not any(row.numpy().tobytes() in train for row in other.train_set.x)


def test_a_noise_free_task_with_too_few_distinct_trials_is_refused_in_one_line():
    with pytest.raises(ValueError, match="too few distinct trials.*task.noise") as info:
        NeurogymDataModule(env="GoNogo-v0", **SMALL)
    assert "\n" not in str(info.value)


def test_task_noise_makes_a_noise_free_task_usable_with_its_own_test_level():
    """GoNogo has 2 distinct trials; task.noise / task.test_noise add N(0, s^2) to every input step."""
    dm = neurogym_dm(env="GoNogo-v0", noise=0.2, test_noise=0.5, train_size=256, test_size=256)
    train_clean = torch.stack([torch.from_numpy(ob) for ob, _, _ in reference_trials("GoNogo-v0", 0, 256)])
    test_clean = torch.stack([torch.from_numpy(ob) for ob, _, _ in reference_trials("GoNogo-v0", 1, 256)])
    assert (dm.train_set.x - train_clean).std().item() == pytest.approx(0.2, rel=0.05)
    assert (dm.test_set.x - test_clean).std().item() == pytest.approx(0.5, rel=0.05)
    train = {row.numpy().tobytes() for row in dm.train_set.x}
    assert not any(row.numpy().tobytes() in train for row in dm.test_set.x)


def test_test_kwargs_change_only_the_test_trials():
    dm = neurogym_dm(env="DelayMatchSample-v0", test_kwargs={"timing": {"delay": 2000}})
    assert dm.T == 42                                                       # the test trials' 4.2 s
    assert (dm.train_set.x[:, :10] == 0).all() and (dm.test_set.x[:, 0, 0] == 1).all()  # fixation input on


def test_neurogym_performance_is_the_envs_own_score():
    """Random actions stepped through the env: its `performance` (first non-fixation action in the decision
    period) equals neurogym_performance on the same trial."""
    rng = np.random.default_rng(0)
    env = make_env("DelayMatchSample-v0", 100.0, {})
    env.seed(5)
    scores, mine = [], []
    for _ in range(40):
        env.new_trial()
        ob, gt = env.ob.copy(), env.gt.copy()
        # mostly fixate, sometimes answer (so that trials differ in when and whether a choice comes)
        actions = np.where(rng.random(len(ob)) < 0.8, 0, rng.integers(1, 3, len(ob)))
        env.t = env.t_ind = 0
        env.performance = 0
        for a in actions:
            *_, info = env.step(int(a))
            if info["new_trial"]:
                break
        scores.append(info["performance"])
        dm = neurogym_dm(env="DelayMatchSample-v0", train_size=1, test_size=1, batch_size=1)
        trials = dm.train_set.__class__(torch.from_numpy(ob)[None], torch.from_numpy(gt).long()[None],
                                        dm.train_set.mask[:1])
        logits = torch.nn.functional.one_hot(torch.from_numpy(actions), 3).float()[None]
        mine.append(neurogym_performance(logits, trials).item())
    assert mine == scores and 0 < sum(scores) < 40


@pytest.mark.parametrize("bad, words", [
    (dict(env="DelayMatchSampl"), ["not a neurogym task", "DelayMatchSample-v0"]),
    (dict(kwargs={"foo": 1}), ["takes no keyword 'foo'", "sigma"]),
    (dict(kwargs={"dt": 20}), ["dt is task.dt"]),
    (dict(env="ReachingDelayResponse-v0"), ["continuous action space"]),
    (dict(env="Bandit-v0"), ["no supervised trials"]),
    (dict(env="AnnubesEnv-v0"), ["cannot be built", "session"]),
    (dict(loss_on="fixation"), ["task.loss_on"]),
    (dict(T=0), ["task.T must be a positive"]),
])
def test_bad_env_keyword_or_setting_is_a_one_line_value_error(bad, words):
    with pytest.raises(ValueError) as info:
        NeurogymDataModule(**{**SMALL, **bad})
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_bad_env_id_in_a_run_is_a_config_error_with_a_failed_record(tmp_path):
    with pytest.raises(ConfigError, match="closest: PerceptualDecisionMaking-v0"):
        train(compose_config(["task=neurogym", "task.env=PerceptualDecisionMakin", "logger=none"]), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "not a neurogym task" in summary["error"]


TINY = ["trainer.max_steps=4", "logger=none", "eval_every=4", "checkpoint_every=0", "model.hidden_size=16",
        "task.train_size=64", "task.test_size=64", "task.batch_size=32", "curvature.batch_size=32",
        "curvature.max_iter=10", "alignment.every_n_steps=2", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("rule", ["bptt", "eprop"])
@pytest.mark.parametrize("env", ["DelayMatchSample-v0", "PerceptualDecisionMaking-v0"])
def test_rules_train_end_to_end_and_measure_gap_lambda_and_rho(env, rule, tmp_path):
    summary = train(compose_config(["task=neurogym", f"task.env={env}", f"rule={rule}", *TINY]), tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 4 and summary["config"]["task"]["env"] == env
    assert summary["gap_acc"] == pytest.approx(summary["train_acc"] - summary["test_acc"])
    assert summary["gap_loss"] == pytest.approx(summary["test_loss"] - summary["train_loss"])
    assert np.isfinite(summary["lambda_max"]) and np.isfinite(summary["rho_mean"])
    if rule == "bptt":
        assert summary["rho_mean"] == pytest.approx(1.0)
    else:
        assert summary["rho_mean"] < 1.0


def test_env_kwargs_pass_through_a_run(tmp_path):
    summary = train(compose_config(["task=neurogym", "task.env=PerceptualDecisionMaking",
                                    "task.kwargs={sigma: 0.5, timing: {stimulus: 500}}", *TINY]),
                    tmp_path)
    assert summary["status"] == "ok"
    assert summary["config"]["task"]["kwargs"] == {"sigma": 0.5, "timing": {"stimulus": 500}}
