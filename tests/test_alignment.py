"""Alignment: rho, cos, e_ratio by their definitions; rho = 1 and e = 0 for bptt, rho = rule.rho for
bptt_scaled, e-prop's rho from the two gradients computed here; the Theorem 1 quantities; nothing touched."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from callbacks.alignment import Alignment, alignment
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import build_rule


def tiny(seed=0):
    torch.manual_seed(seed)
    net = RateRNN(3, 8, 2, alpha=0.3, activation="tanh", readout_scale=1.0).double()
    x = torch.randn(12, 9, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (12, 9))
    mask = torch.zeros(12, 9, dtype=torch.float64)
    mask[:, -2:] = 1.0
    return net, (x, y, mask)


def module_for(rule_name, l2=0.01, lr=0.1, **params):
    net, batch = tiny()
    module = SimpleNamespace(net=net, rule=build_rule(rule_name, net, **params), objective=Objective("ce", l2),
                             lr=lr)
    return module, batch


def measure(module, batch, history=None, callback_metrics=None):
    curvature = SimpleNamespace(history=history or {})
    trainer = SimpleNamespace(callbacks=[curvature], callback_metrics=callback_metrics or {}, global_step=0)
    return Alignment(every_n_steps=1).measure(trainer, module, batch)


def test_alignment_of_a_constructed_estimate():
    g = torch.randn(5, 5, dtype=torch.float64)
    e = torch.randn(5, 5, dtype=torch.float64)
    e = e - (e * g).sum() / (g * g).sum() * g  # orthogonal to g
    out = alignment(-0.4 * g + e, g)
    assert out["align/rho"] == pytest.approx(-0.4, abs=1e-12)
    assert out["align/e_ratio"] == pytest.approx(float(e.norm() / g.norm()), rel=1e-12)
    assert out["align/cos"] == pytest.approx(-0.4 * float(g.norm() / (-0.4 * g + e).norm()), rel=1e-12)
    assert out["align/norm_ratio"] == pytest.approx(float((-0.4 * g + e).norm() / g.norm()), rel=1e-12)


def test_bptt_has_rho_one_and_no_orthogonal_error():
    module, batch = module_for("bptt")
    out = measure(module, batch)
    assert out["align/rho"] == pytest.approx(1.0, abs=1e-12)
    assert out["align/cos"] == pytest.approx(1.0, abs=1e-12)
    assert out["align/e_ratio"] == pytest.approx(0.0, abs=1e-7)  # sqrt of a rounding-level difference
    assert out["align/norm_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert not any(k.startswith("theory/") for k in out)  # Theorem 1 lives at curvature steps (theory.py)


@pytest.mark.parametrize("noise_std", [0.0, 0.3])
def test_bptt_surrogate_gradient_is_the_exact_gradient_that_alignment_reuses(noise_std):
    """BPTT declares surrogate_is_objective, so alignment does not compute its estimate a second time:
    that is only right while the surrogate's gradient equals the exact one (a noisy net measures noiselessly)."""
    from callbacks.alignment import gradients
    module, batch = module_for("bptt")
    module.net.noise_std = noise_std
    assert module.rule.surrogate_is_objective
    g_hat, g = gradients(module, batch)
    (direct,) = torch.autograd.grad(module.rule.surrogate(module.net, batch, module.objective).surrogate,
                                    module.net.W_h)
    assert g_hat is g and torch.equal(direct, g)
    others = [build_rule(name, module.net) for name in ("eprop", "rflo", "mdgl")]
    assert not any(r.surrogate_is_objective for r in others + [build_rule("bptt_scaled", module.net, rho=0.5)])


def test_scaled_bptt_rho_is_the_rule_rho():
    module, batch = module_for("bptt_scaled", rho=0.37)
    out = measure(module, batch)
    assert out["align/rho"] == pytest.approx(0.37, rel=1e-10)
    assert out["align/e_ratio"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("rule", ["eprop", "rflo", "mdgl"])
def test_truncated_rule_rho_equals_definition_from_both_gradients(rule):
    module, batch = module_for(rule)
    net, objective = module.net, module.objective
    x, y, mask = batch
    # the exact gradient of the objective and the rule's estimate, written out here
    y_hat, _ = net(x)
    (g,) = torch.autograd.grad(objective(y_hat, y, mask, [net.W_x, net.W_h, net.W_out]), net.W_h)
    (g_hat,) = torch.autograd.grad(module.rule.surrogate(net, batch, objective).surrogate, net.W_h)
    rho = float((g_hat * g).sum() / (g * g).sum())
    e_ratio = float((g_hat - rho * g).norm() / g.norm())
    out = measure(module, batch)
    assert out["align/rho"] == pytest.approx(rho, rel=1e-10)
    assert out["align/e_ratio"] == pytest.approx(e_ratio, rel=1e-8)
    assert abs(rho - 1.0) > 1e-3 and e_ratio > 1e-3  # a truncated rule really differs from BPTT here


def test_measuring_touches_no_grad_no_rng_no_weights():
    module, batch = module_for("mdgl")
    net = module.net
    net.W_x.grad = torch.full_like(net.W_x, 7.0)  # a leftover .grad must stay exactly as it was
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    rng = torch.get_rng_state()
    out = measure(module, batch)
    assert all(math.isfinite(v) for v in out.values())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(net.W_x.grad, torch.full_like(net.W_x, 7.0))
    assert all(p.grad is None for k, p in net.named_parameters() if k != "W_x")
    assert all(torch.equal(p, before[k]) for k, p in net.named_parameters())
