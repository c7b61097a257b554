"""Every rule's estimate equals its equation: the autograd surrogate of modules/rules against the plain
eligibility-trace / backward-recursion reference in tests/rule_reference.py, in float64 on small nets."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import rule_reference as ref
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import RULES, build_rule

N_IN, N_OUT, T, B = 3, 2, 6, 4
PARAMS = ("W_x", "W_h", "b", "W_out", "b_out")
RULE_ARGS = {"bptt": {}, "eprop": {}, "rflo": {}, "mdgl": {}, "tbptt": {"window": 2}, "bptt_scaled": {"rho": 0.3}}
RTOL, ATOL = 1e-9, 1e-12


def make_net(activation="relu", alpha=0.5, *, hidden=10, dale=False, n_cell_types=2, noise_std=0.0, seed=0):
    """A float64 RateRNN with every parameter nonzero (diagonal of W_h too: it must have no effect) and biases
    that keep part of the relu units active and part silent."""
    torch.manual_seed(seed)
    net = RateRNN(N_IN, hidden, N_OUT, alpha=alpha, activation=activation, dale=dale,
                  n_cell_types=n_cell_types, noise_std=noise_std).double()
    with torch.no_grad():
        net.W_h.normal_(0.0, 1.5 / math.sqrt(hidden))
        net.W_x.normal_(0.0, 1.0)
        net.b.uniform_(-0.2, 0.6)
        net.W_out.normal_(0.0, 1.0 / math.sqrt(hidden))
        net.b_out.normal_(0.0, 0.5)
    return net


def make_batch(loss="ce", mask="all", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, N_IN, generator=g, dtype=torch.float64)
    if loss == "ce":
        y = torch.randint(N_OUT, (B, T), generator=g)
    else:
        y = torch.randn(B, T, N_OUT, generator=g, dtype=torch.float64)
    m = torch.zeros(B, T, dtype=torch.float64)
    if mask == "all":
        m[:] = 1.0
    elif mask == "last":
        m[:, -1] = 1.0
    else:  # an irregular pattern: some steps, different per trial
        m = (torch.rand(B, T, generator=g) < 0.4).double()
        m[0, 2] = 1.0
    return x, y, m


def project(rule, net, batch, objective, noise=None):
    """(loss, {name: d surrogate / d param}, y_hat) from the project's rule."""
    est = rule.surrogate(net, batch, objective, noise=noise)
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(est.surrogate, [params[k] for k in PARAMS])
    return est.loss.item(), {k: g.numpy() for k, g in zip(PARAMS, grads)}, est.y_hat.detach().numpy()


def reference(rule_name, rule, net, batch, loss, l2=0.0, noise=None):
    x, y, m = (t.numpy() for t in batch)
    params = {k: p.detach().numpy() for k, p in net.named_parameters()}
    drive_noise = None if noise is None else (net.noise_std / math.sqrt(net.alpha)) * noise.numpy()
    return ref.rule_gradients(
        rule_name, params, x, y, m, alpha=net.alpha, activation=net.activation, loss=loss, l2=l2,
        dale_sign=net.pre_sign.numpy() if net.dale else None, drive_noise=drive_noise,
        feedback=rule.feedback_matrix(net).detach().numpy() if rule_name == "rflo" else None, types=net.types.numpy(),
        window=getattr(rule, "window", None), rho=getattr(rule, "rho", 1.0))


def assert_matches(got, want, what=""):
    for k in PARAMS:
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=ATOL, err_msg=f"{what} {k}")


def check_rule(rule_name, net, loss="ce", mask="all", l2=0.0, noise=None):
    rule = build_rule(rule_name, net, **RULE_ARGS[rule_name])
    batch = make_batch(loss, mask)
    objective = Objective(loss, l2)
    got_loss, got, got_y = project(rule, net, batch, objective, noise)
    want_loss, want, want_y = reference(rule_name, rule, net, batch, loss, l2, noise)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-12, err_msg="forward pass")
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    assert_matches(got, want, rule_name)
    return got


# ----- each rule equals its equation ------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("mask", ["all", "last", "irregular"])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("rule_name", sorted(RULE_ARGS))
def test_rule_matches_reference(rule_name, activation, alpha, mask, loss):
    check_rule(rule_name, make_net(activation, alpha), loss, mask)


@pytest.mark.parametrize("rule_name", sorted(RULE_ARGS))
def test_rule_matches_reference_softplus_noise_l2(rule_name):
    """Private noise enters the forward pass identically for every rule; the L2 term is part of the objective."""
    net = make_net("softplus", 0.4, noise_std=0.3)
    noise = torch.randn(B, T, net.hidden_size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    check_rule(rule_name, net, "mse", "all", l2=0.05, noise=noise)


@pytest.mark.parametrize("rule_name", sorted(RULE_ARGS))
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_dale(rule_name, activation):
    """Dale's law for every rule: effective W_h has zero diagonal and one sign per presynaptic column, and the
    estimate matches the reference through the chain rule W_eff = |W| * sign_pre."""
    net = make_net(activation, 0.5, dale=True)
    w = net.recurrent_weight().detach()
    exc = net.pre_sign > 0
    assert exc.any() and (~exc).any()
    assert (w[:, exc] >= 0).all() and (w[:, ~exc] <= 0).all() and (w.diagonal() == 0).all()
    assert (net.W_h < 0).any(), "parameter signs must not matter: the test needs negative stored weights"
    check_rule(rule_name, net, "ce", "all")


@pytest.mark.parametrize("n_cell_types", [1, 3])
def test_mdgl_cell_types(n_cell_types):
    check_rule("mdgl", make_net("tanh", 0.5, hidden=12, n_cell_types=n_cell_types), "mse", "all")


def test_net_without_bias():
    net = RateRNN(N_IN, 8, N_OUT, alpha=0.5, activation="tanh", bias=False).double()
    for rule_name in ("eprop", "mdgl", "rflo"):
        rule = build_rule(rule_name, net)
        batch = make_batch("ce", "all")
        _, want, _ = reference(rule_name, rule, net, batch, "ce")
        grads = torch.autograd.grad(rule.surrogate(net, batch, Objective("ce")).surrogate, [net.W_h, net.W_x])
        np.testing.assert_allclose(grads[0].numpy(), want["W_h"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(grads[1].numpy(), want["W_x"], rtol=RTOL, atol=ATOL)


def test_reference_can_tell_rules_apart():
    """The comparisons above are not vacuous: on this net the truncated rules differ from BPTT and each other."""
    net = make_net("tanh", 0.3)
    batch = make_batch("ce", "all")
    grads = {name: reference(name, build_rule(name, net, **RULE_ARGS[name]), net, batch, "ce")[1]["W_h"]
             for name in ("bptt", "eprop", "rflo", "mdgl", "tbptt")}
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(grads[a] - grads[b]).max() > 1e-4 * np.abs(grads["bptt"]).max(), (a, b)


# ----- limits ------------------------------------------------------------------------------------------------
def grads_of(rule, net, batch, objective):
    return project(rule, net, batch, objective)[1]


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_tbptt_long_window_is_bptt(alpha):
    net, batch, objective = make_net("tanh", alpha), make_batch("mse", "all"), Objective("mse", 0.01)
    want = grads_of(build_rule("bptt", net), net, batch, objective)
    for window in (T, T + 3):
        assert_matches(grads_of(build_rule("tbptt", net, window=window), net, batch, objective), want, f"window {window}")


def test_tbptt_window_one_is_eprop_without_leak():
    """At alpha = 1 there is no leak path, so detaching the state every step is e-prop's truncation."""
    net, batch, objective = make_net("relu", 1.0), make_batch("ce", "all"), Objective("ce")
    assert_matches(grads_of(build_rule("tbptt", net, window=1), net, batch, objective),
                   grads_of(build_rule("eprop", net), net, batch, objective))


def test_rflo_with_symmetric_feedback_is_eprop():
    net, batch, objective = make_net("tanh", 0.5), make_batch("ce", "all"), Objective("ce")
    rflo = build_rule("rflo", net, feedback_scale=1.0)  # B_eff = W_out^T exactly (the default is 0.3 of it)
    assert rflo.feedback.shape == (net.hidden_size, N_OUT)
    with torch.no_grad():
        rflo.feedback.copy_(net.W_out.T)
    assert_matches(grads_of(rflo, net, batch, objective), grads_of(build_rule("eprop", net), net, batch, objective))


def zero_block_means(net):
    """Shift each (post type, pre type) block of W_h so that its mean over off-diagonal entries is zero."""
    with torch.no_grad():
        types, off = net.types, net.no_autapse.bool()
        for k in types.unique():
            for l in types.unique():
                block = (types[:, None] == k) & (types[None, :] == l) & off
                net.W_h[block] -= net.W_h[block].mean()


def test_mdgl_with_zero_type_average_is_eprop():
    net, batch, objective = make_net("tanh", 0.5), make_batch("mse", "all"), Objective("mse")
    mdgl, eprop = build_rule("mdgl", net), build_rule("eprop", net)
    before = grads_of(mdgl, net, batch, objective)
    assert np.abs(before["W_h"] - grads_of(eprop, net, batch, objective)["W_h"]).max() > 1e-4  # differs in general
    zero_block_means(net)
    assert mdgl.modulatory_weight(net).abs().max() < 1e-14
    assert_matches(grads_of(mdgl, net, batch, objective), grads_of(eprop, net, batch, objective))


def test_bptt_scaled_is_rho_times_bptt():
    rho = 0.37
    net, batch, objective = make_net("relu", 0.5), make_batch("ce", "last"), Objective("ce", 0.02)
    exact = grads_of(build_rule("bptt", net), net, batch, objective)
    scaled = grads_of(build_rule("bptt_scaled", net, rho=rho), net, batch, objective)
    for k in PARAMS:
        factor = rho if k in ("W_x", "W_h", "b") else 1.0
        np.testing.assert_allclose(scaled[k], factor * exact[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("rule_name", sorted(RULE_ARGS))
def test_readout_gradient_is_exact(rule_name):
    net, batch, objective = make_net("tanh", 0.5), make_batch("mse", "irregular"), Objective("mse", 0.01)
    exact = grads_of(build_rule("bptt", net), net, batch, objective)
    got = grads_of(build_rule(rule_name, net, **RULE_ARGS[rule_name]), net, batch, objective)
    for k in ("W_out", "b_out"):
        np.testing.assert_allclose(got[k], exact[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("rule_name", sorted(RULE_ARGS))
def test_rules_do_not_change_the_forward_pass(rule_name):
    net, batch, objective = make_net("relu", 0.5), make_batch("ce", "all"), Objective("ce")
    est = build_rule(rule_name, net, **RULE_ARGS[rule_name]).surrogate(net, batch, objective)
    y_exact, _ = net(batch[0])
    torch.testing.assert_close(est.y_hat, y_exact, rtol=0, atol=0)
    torch.testing.assert_close(est.loss, objective(y_exact, batch[1], batch[2], [net.W_x, net.W_h, net.W_out]))


# ----- registry ----------------------------------------------------------------------------------------------
def test_registry_has_every_rule():
    assert set(RULE_ARGS) <= set(RULES)


def test_unknown_rule_lists_valid_names():
    net = make_net()
    with pytest.raises(ValueError) as err:
        build_rule("backprop", net)
    for name in RULE_ARGS:
        assert name in str(err.value)


@pytest.mark.parametrize("window", [0, -3])
def test_tbptt_window_must_be_positive(window):
    with pytest.raises(ValueError, match="window"):
        build_rule("tbptt", make_net(), window=window)


def test_bptt_scaled_needs_rho():
    with pytest.raises(ValueError, match="rho"):
        build_rule("bptt_scaled", make_net())


def test_bptt_scaled_rho_from_run(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "ok", "rho_mean": 0.125}))
    assert build_rule("bptt_scaled", make_net(), rho_from=str(tmp_path)).rho == 0.125
    assert build_rule("bptt_scaled", make_net(), rho=0.5, rho_from=str(tmp_path)).rho == 0.5  # explicit rho wins
    with pytest.raises(ValueError, match="summary.json"):
        build_rule("bptt_scaled", make_net(), rho_from=str(tmp_path / "nowhere"))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "ok", "rho_mean": None}))
    with pytest.raises(ValueError, match="rho_mean"):
        build_rule("bptt_scaled", make_net(), rho_from=str(tmp_path))


def test_rflo_feedback_is_a_seeded_buffer():
    net = make_net()
    torch.manual_seed(3)
    a = build_rule("rflo", net)
    torch.manual_seed(3)
    b = build_rule("rflo", net)
    torch.testing.assert_close(a.feedback, b.feedback)
    assert "feedback" in a.state_dict() and a.feedback.dtype == torch.float64
    assert not list(a.parameters())


@pytest.mark.parametrize("norm", ["readout", "fixed"])
def test_rflo_feedback_length_follows_its_principle(norm):
    """readout: |B_eff| = scale |W_out| whatever the readout grows to; fixed: B_eff = scale B. Either way
    the direction is B's, and the W_h update scales with the feedback scale (a rule ignoring it fails)."""
    net, batch, objective = make_net("tanh", 0.5), make_batch("ce", "all"), Objective("ce")
    rule = build_rule("rflo", net, feedback_scale=2.0, feedback_norm=norm)
    with torch.no_grad():
        net.W_out.mul_(7.0)  # a trained readout is much longer than the initial one
    b_eff = rule.feedback_matrix(net)
    want = 2.0 * (net.W_out.norm() if norm == "readout" else rule.feedback.norm())
    assert float(b_eff.norm()) == pytest.approx(float(want.detach()), rel=1e-12)
    assert float(torch.nn.functional.cosine_similarity(b_eff.flatten(), rule.feedback.flatten(), dim=0)) == pytest.approx(1.0)
    half = build_rule("rflo", net, feedback_scale=1.0, feedback_norm=norm)
    half.feedback.copy_(rule.feedback)
    g2, g1 = grads_of(rule, net, batch, objective), grads_of(half, net, batch, objective)
    np.testing.assert_allclose(g2["W_h"], 2.0 * g1["W_h"], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="feedback_norm"):
        build_rule("rflo", net, feedback_norm="bogus")
