"""rule=bptt_noise: the exact gradient plus a random error orthogonal to it, |e| = e_ratio |g| on each of
W_h, W_x and b (modules/rules/bptt_noise.py). Checked against a plainly written construction (numpy BPTT
from tests/rule_reference.py, the draw projected and scaled by hand), for being unbiased, for its keyed draws,
on short real runs' alignment histories, and for refusing bad values in one line."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import rule_reference as ref
from callbacks.alignment import alignment
from conftest import ROOT, compose_config
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import build_rule
from rulescape.errors import EXIT_CONFIG, ConfigError

N_IN, N_OUT, T, B, N = 3, 2, 6, 4, 10
PARAMS = ("W_x", "W_h", "b", "W_out", "b_out")


def make_net(alpha=0.5, activation="tanh", dale=False, bias=True, seed=0):
    torch.manual_seed(seed)
    net = RateRNN(N_IN, N, N_OUT, alpha=alpha, activation=activation, dale=dale, bias=bias).double()
    with torch.no_grad():
        net.W_out.normal_(0.0, 1.0 / math.sqrt(N))
        if net.b is not None:
            net.b.uniform_(-0.2, 0.6)
    return net


def make_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, N_IN, generator=g, dtype=torch.float64)
    y = torch.randint(N_OUT, (B, T), generator=g)
    return x, y, torch.ones(B, T, dtype=torch.float64)


def estimate(rule, net, batch, objective, generator=None):
    est = rule.surrogate(net, batch, objective, **({"generator": generator} if generator is not None else {}))
    params = dict(net.named_parameters())
    names = [k for k in PARAMS if k in params]
    return est, dict(zip(names, torch.autograd.grad(est.surrogate, [params[k] for k in names])))


def explicit_construction(net, batch, l2, e_ratio, generator):
    """The estimate written out: g by numpy BPTT, then for W_h, W_x, b in that order a N(0, I) draw (W_h's
    diagonal zeroed: no synapse), its component along g removed, scaled to e_ratio |g|; readout exact."""
    x, y, m = (t.numpy() for t in batch)
    params = {k: p.detach().numpy() for k, p in net.named_parameters()}
    _, g, _ = ref.rule_gradients("bptt", params, x, y, m, alpha=net.alpha, activation=net.activation, loss="ce",
                                 l2=l2, dale_sign=net.pre_sign.numpy() if net.dale else None)
    out = dict(g)
    for name in ("W_h", "W_x", "b"):
        if name not in g:
            continue
        draw = torch.randn(params[name].shape, generator=generator, dtype=torch.float64).numpy()
        if name == "W_h":
            draw = draw * (1.0 - np.eye(N))
        gv, dv = g[name].ravel(), draw.ravel()
        e = dv - (dv @ gv) / (gv @ gv) * gv
        out[name] = g[name] + (e_ratio * np.linalg.norm(gv) / np.linalg.norm(e) * e).reshape(g[name].shape)
    return out


@pytest.mark.parametrize("e_ratio,dale,bias,activation", [(2.5, False, True, "tanh"), (0.7, True, True, "relu"),
                                                          (1.3, False, False, "tanh"), (0.0, False, True, "relu")])
def test_equals_the_explicit_construction(e_ratio, dale, bias, activation):
    net, batch, objective = make_net(dale=dale, bias=bias, activation=activation), make_batch(), Objective("ce", 0.01)
    rule = build_rule("bptt_noise", net, e_ratio=e_ratio)
    est, got = estimate(rule, net, batch, objective, torch.Generator().manual_seed(7))
    want = explicit_construction(net, batch, 0.01, e_ratio, torch.Generator().manual_seed(7))
    assert set(got) == set(want)
    for k in got:
        np.testing.assert_allclose(got[k].numpy(), want[k], rtol=1e-9, atol=1e-12, err_msg=k)
    y_exact, _ = net(batch[0])
    torch.testing.assert_close(est.y_hat, y_exact.detach(), rtol=0, atol=0)  # the forward is the network's
    exact = explicit_construction(net, batch, 0.01, 0.0, torch.Generator())
    for k in ("W_out", "b_out"):  # the readout keeps its exact gradient
        np.testing.assert_allclose(got[k].numpy(), exact[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("e_ratio", [0.3, 4.0])
def test_alignment_reads_rho_one_and_the_requested_error_on_every_tensor(e_ratio):
    net, batch, objective = make_net(), make_batch(), Objective("ce", 0.01)
    _, g = estimate(build_rule("bptt", net), net, batch, objective)
    _, got = estimate(build_rule("bptt_noise", net, e_ratio=e_ratio), net, batch, objective,
                      torch.Generator().manual_seed(3))
    for k in ("W_h", "W_x", "b"):
        a = alignment(got[k], g[k])
        assert a["align/rho"] == pytest.approx(1.0, abs=1e-12), k
        assert a["align/e_ratio"] == pytest.approx(e_ratio, rel=1e-10), k
    assert float(got["W_h"].diagonal().abs().max()) == 0.0  # no error on synapses that do not exist


def test_a_zero_gradient_gets_no_error():
    """Where g = 0 (e.g. a tensor the loss does not reach) there is no direction to be orthogonal to and no
    length to scale: the error is 0, not NaN."""
    from modules.rules.bptt_noise import orthogonal_error
    draw = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(orthogonal_error(torch.zeros(4, 5, dtype=torch.float64), draw, 3.0),
                       torch.zeros(4, 5, dtype=torch.float64))


def test_unbiased_error_shrinks_like_one_over_sqrt_draws():
    """Mean of K estimates -> g: |mean e| / |g| is about e_ratio / sqrt(K) (E|mean e|^2 = e_ratio^2 |g|^2 / K)."""
    net, batch, objective = make_net(), make_batch(), Objective("ce")
    rule, c, k = build_rule("bptt_noise", net, e_ratio=2.0), 2.0, 400
    _, g = estimate(build_rule("bptt", net), net, batch, objective)
    gen = torch.Generator().manual_seed(11)
    mean = sum(estimate(rule, net, batch, objective, gen)[1]["W_h"] for _ in range(k)) / k
    ratio = float((mean - g["W_h"]).norm() / g["W_h"].norm())
    assert 0.7 * c / math.sqrt(k) < ratio < 1.3 * c / math.sqrt(k), ratio


def test_draws_are_keyed_by_seed_and_step_and_measurements_draw_their_own():
    net, batch, objective = make_net(), make_batch(), Objective("ce")

    def rule(seed):
        torch.manual_seed(seed)
        return build_rule("bptt_noise", net, e_ratio=1.0)

    def train_draw(r, step):
        r.on_step(step)
        return estimate(r, net, batch, objective)[1]["W_h"]

    a, b = rule(0), rule(0)
    steps_a = [train_draw(a, s) for s in range(3)]
    estimate(b, net, batch, objective)  # a measurement between training draws shifts nothing
    assert torch.equal(train_draw(b, 0), steps_a[0])
    estimate(b, net, batch, objective)
    assert torch.equal(train_draw(b, 1), steps_a[1])
    resumed = rule(123)
    resumed.load_state_dict(b.state_dict())
    assert torch.equal(train_draw(resumed, 2), steps_a[2])
    assert not torch.equal(steps_a[0], steps_a[1])
    assert not torch.equal(estimate(a, net, batch, objective)[1]["W_h"], steps_a[2])


# ----- e_ratio from another run's record ---------------------------------------------------------------------
def write_record(folder, history, status="ok"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps({"status": status, "history": history}))


def test_e_ratio_follows_the_recorded_history_step_by_step(tmp_path):
    write_record(tmp_path / "eprop_dms_seed1", {"align_e_ratio": [[10, 2.0], [0, 3.0], [20, None], [30, 0.5]]})
    rule = build_rule("bptt_noise", make_net(), e_ratio_from=str(tmp_path / "eprop_dms_seed1*"))
    want = {0: 3.0, 9: 3.0, 10: 2.0, 25: 2.0, 30: 0.5, 999: 0.5}
    for step, value in want.items():
        rule.set_step(step)
        assert rule.e_ratio == value, step
    assert build_rule("bptt_noise", make_net(), e_ratio=0.25, e_ratio_from=str(tmp_path)).e_ratio == 0.25


@pytest.mark.parametrize("setup,words", [
    (lambda d: None, ["rule.e_ratio_from", "no finished summary.json"]),
    (lambda d: write_record(d, {"rho": [[0, 0.5]]}), ["rule.e_ratio_from", "no align_e_ratio history"]),
    (lambda d: write_record(d, {"align_e_ratio": [[0, -1.0]]}), ["rule.e_ratio_from", "align_e_ratio=-1.0"]),
    (lambda d: (d.mkdir(), (d / "summary.json").write_text("{not json")), ["rule.e_ratio_from", "summary.json"]),
])
def test_e_ratio_from_without_a_usable_record_is_refused(tmp_path, setup, words):
    setup(tmp_path / "src")
    with pytest.raises(ValueError) as info:
        build_rule("bptt_noise", make_net(), e_ratio_from=str(tmp_path / "src"))
    for word in words:
        assert word in str(info.value), str(info.value)


# ----- bad values: one line, exit 2 ----------------------------------------------------------------------------
QUICK = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=12", "eval_every=4",
         "checkpoint_every=0", "task.train_size=64", "task.test_size=64", "task.batch_size=16",
         "model.hidden_size=16", "curvature.batch_size=16", "curvature.every_n_steps=4",
         "alignment.every_n_steps=2", "rule=bptt_noise"]


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf", "-inf", "lots"])
def test_bad_e_ratio_fails_before_work_with_one_line(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        from rulescape.run.training import train
        train(compose_config(QUICK + [f"rule.e_ratio={value}"]), tmp_path)
    message = str(info.value)
    # a non-finite number is refused by validate's finite check (every number, untyped rule keys too) first
    said = ">= 0" in message or value in ("nan", "inf", "-inf") and "must be finite" in message
    assert "\n" not in message and "rule.e_ratio=" in message and said, message
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("args,words", [(["rule.e_ratio=nan"], ["rule.e_ratio=nan"]),
                                        pytest.param(["rule.e_ratio=null", "rule.e_ratio_from=/nonexistent/run"],
                                                     ["rule.e_ratio_from", "/nonexistent/run"],
                                                     marks=pytest.mark.slow)])  # in-process twin stays fast
def test_cli_exit_code_two_and_one_line(tmp_path, args, words):
    result = subprocess.run([sys.executable, "train.py", "rule=bptt_noise", *args, "logger=none",
                             f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr


# ----- a short real run: the alignment history reads the request at every alignment step ----------------------
def assert_alignment_matches(summary, want_e_ratio):
    rho, e_ratio = summary["history"]["rho"], summary["history"]["align_e_ratio"]
    assert len(rho) == len(e_ratio) >= 6
    for (step, r), (_, e) in zip(rho, e_ratio):
        assert abs(r - 1.0) <= 0.02, (step, r)
        assert abs(e / want_e_ratio(step) - 1.0) <= 0.05, (step, e, want_e_ratio(step))


def test_short_run_measures_rho_one_and_the_requested_error(tmp_path):
    from rulescape.run.training import train
    summary = train(compose_config(QUICK + ["rule.e_ratio=1.7"]), tmp_path)
    assert summary["status"] == "ok"
    assert_alignment_matches(summary, lambda step: 1.7)


@pytest.mark.slow
def test_short_run_follows_an_eprop_runs_error_history(tmp_path):
    from rulescape.run.training import train
    source = train(compose_config(QUICK + ["rule=eprop"]), tmp_path / "eprop")
    history = dict((int(s), v) for s, v in source["history"]["align_e_ratio"])
    assert len(set(round(v, 3) for v in history.values())) > 1  # a history that changes: following it shows
    summary = train(compose_config(QUICK + ["rule.e_ratio=null", f"rule.e_ratio_from={tmp_path / 'eprop'}"]),
                    tmp_path / "noise")
    assert summary["status"] == "ok"
    assert_alignment_matches(summary, lambda step: history[step])


@pytest.mark.slow
def test_resume_is_exact_and_measurements_do_not_steer(tmp_path):
    from conftest import assert_resume_exact_and_unsteered
    assert_resume_exact_and_unsteered(QUICK + ["trainer.max_steps=8", "model.noise_std=0.1"], tmp_path)


@pytest.mark.slow
def test_study_arms_follow_the_same_seeds_eprop_run(tmp_path):
    """arm=bptt_noise follows the sweep's e-prop run's align_e_ratio history; arm=eprop_lr_rho trains at
    lr / that run's rho_mean (Theorem 1's bound uses the optimizer's rate, so it is rho_mean / (rho lr))."""
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "train.py", "-m", "experiment=smoke", "logger=none",
                             "arm=eprop,bptt_noise,eprop_lr_rho", "seed=0", "alignment.every_n_steps=2",
                             "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep}",
                             "hydra.sweep.subdir=${study_arm}_${task.name}_seed${seed}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    read = lambda arm: json.loads((sweep / f"{arm}_dms_seed0" / "summary.json").read_text())  # noqa: E731
    eprop, noise, lr_rho = read("eprop"), read("bptt_noise"), read("eprop_lr_rho")
    want = dict((int(s), v) for s, v in eprop["history"]["align_e_ratio"])
    assert_alignment_matches(noise, lambda step: want[step])
    lr = lr_rho["lr"] / eprop["rho_mean"]
    for (s, bound), (_, rho) in zip(lr_rho["history"]["theory_lambda_bound"], lr_rho["history"]["theory_rho_window"]):
        assert bound == pytest.approx(1.0 / (abs(rho) * lr), rel=1e-9), s
