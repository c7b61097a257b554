"""rtrl, uoro and node_perturbation: exactness (rtrl), unbiasedness at the rate the variance predicts
(uoro, node perturbation; a test with the power to reject a biased estimator), node perturbation's bias
shrinking as sigma^2, and reproducible, resumable draws that measurements never consume.

Tiny float64 networks (N = 5, T = 6) keep the fast tests to a few seconds; K independent estimates of one
batch's gradient are drawn at once by replicating the batch K times (trials are independent).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rule_reference as ref
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import build_rule
from modules.rules.node_perturbation import perturbation_estimates
from modules.rules.rtrl import presynaptic, readout_part, rollout, rtrl_gradient, slopes
from modules.rules.uoro import draw_signs, uoro_estimates

N_IN, N, N_OUT, B, T = 3, 5, 2, 2, 6
PARAMS = ("W_h", "W_x", "b")


def make_net(activation="tanh", alpha=0.5, *, dale=False, noise_std=0.0, seed=0):
    torch.manual_seed(seed)
    net = RateRNN(N_IN, N, N_OUT, alpha=alpha, activation=activation, dale=dale, noise_std=noise_std).double()
    with torch.no_grad():
        if not dale:
            net.W_h.normal_(0.0, 1.5 / math.sqrt(N))
        net.W_x.normal_(0.0, 1.0)
        net.b.uniform_(-0.2, 0.6)
        net.W_out.normal_(0.0, 1.0 / math.sqrt(N))
        net.b_out.normal_(0.0, 0.5)
    return net


def make_batch(loss="ce", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, N_IN, generator=g, dtype=torch.float64)
    y = (torch.randint(N_OUT, (B, T), generator=g) if loss == "ce"
         else torch.randn(B, T, N_OUT, generator=g, dtype=torch.float64))
    m = torch.zeros(B, T, dtype=torch.float64)
    m[0, -2:], m[1, 2], m[1, -1] = 1.0, 1.0, 1.0  # irregular: some steps, different per trial
    return x, y, m


def grads(estimate, net) -> dict[str, torch.Tensor]:
    names = ("W_h", "W_x", "b", "W_out", "b_out")
    values = torch.autograd.grad(estimate.surrogate, [getattr(net, k) for k in names])
    return dict(zip(names, values))


def flat(theta: torch.Tensor) -> torch.Tensor:
    """(..., N, N + N_in + 1) per-unit estimates -> (..., D): W_h without its (unused) diagonal, W_x, b."""
    off = ~torch.eye(N, dtype=torch.bool)
    return torch.cat([theta[..., :N][..., off], theta[..., N:].flatten(-2)], -1)


def flat_params(g: dict) -> torch.Tensor:
    return flat(torch.cat([g["W_h"], g["W_x"], g["b"][:, None]], 1))


# ----- rtrl -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation,alpha,dale,loss,l2", [("tanh", 0.3, False, "ce", 0.01),
                                                           ("relu", 1.0, True, "mse", 0.0),
                                                           ("softplus", 0.5, False, "mse", 0.1)])
def test_rtrl_equals_bptt_and_reference(activation, alpha, dale, loss, l2):
    net, batch, objective = make_net(activation, alpha, dale=dale, noise_std=0.1), make_batch(loss), Objective(loss, l2)
    noise = torch.randn(B, T, N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = grads(build_rule("rtrl", net, batch_size=B).surrogate(net, batch, objective, noise=noise), net)
    want = grads(build_rule("bptt", net).surrogate(net, batch, objective, noise=noise), net)
    p = {k: getattr(net, k).detach().numpy() for k in ("W_x", "W_h", "b", "W_out", "b_out")}
    _, independent, _ = ref.rtrl_rule_gradients(
        p, batch[0].numpy(), batch[1].numpy(), batch[2].numpy(), alpha=alpha, activation=activation,
        loss=loss, l2=l2, dale_sign=net.pre_sign.numpy() if dale else None,
        drive_noise=(net.noise_std / math.sqrt(alpha) * noise).numpy())
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-9, msg=k)
        np.testing.assert_allclose(got[k].numpy(), independent[k], rtol=0, atol=1e-9, err_msg=k)


def test_rtrl_refuses_a_large_network_before_allocating():
    net = RateRNN(3, 128, 2)
    with pytest.raises(ValueError, match=r"rule=rtrl needs a .* MiB .*model.hidden_size<=\d+"):
        build_rule("rtrl", net, batch_size=64)
    build_rule("rtrl", RateRNN(3, 16, 2), batch_size=64)  # small: fine


@pytest.mark.parametrize("activation,alpha,dale", [("tanh", 0.3, False), ("relu", 1.0, True)])
def test_uoro_equals_the_step_by_step_reference(activation, alpha, dale):
    """The rule's closed form (theta never materialised per step) against the recursion written out."""
    net, batch, objective = make_net(activation, alpha, dale=dale), make_batch("mse"), Objective("mse")
    x = batch[0]
    with torch.no_grad():
        h, r = rollout(net, x)
    psi = slopes(net, h)
    _, _, d_r = readout_part(net, r, batch, objective)
    signs = draw_signs((B, T, N), torch.Generator().manual_seed(4), r)
    got = uoro_estimates(net, r, psi, presynaptic(net, r, x), psi * d_r, signs)
    p = {k: getattr(net, k).detach().numpy() for k in ("W_x", "W_out", "b_out")}
    p["W_h"] = net.recurrent_weight().detach().numpy()
    fw = {"r": r.numpy(), "psi": psi.numpy()}
    y_hat = net.readout(r).detach().requires_grad_(True)
    (delta,) = torch.autograd.grad(objective.data_loss(y_hat, batch[1], batch[2]), y_hat)
    want = ref.uoro_estimates(p, x.numpy(), fw, delta.numpy(), alpha, signs.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)
    summed = uoro_estimates(net, r, psi, presynaptic(net, r, x), psi * d_r, signs, per_trial=False)
    np.testing.assert_allclose(summed.numpy(), want.sum(0), rtol=1e-9, atol=1e-12)  # the training step's form


# ----- unbiasedness: mean of K estimates vs the exact gradient -------------------------------------------------
def setup_exact(activation="tanh", loss="ce"):
    net, batch, objective = make_net(activation), make_batch(loss), Objective(loss)
    exact = flat_params(grads(build_rule("bptt", net).surrogate(net, batch, objective), net)).detach()
    eprop = flat_params(grads(build_rule("eprop", net).surrogate(net, batch, objective), net)).detach()
    return net, batch, objective, exact, eprop


def replicate(a: torch.Tensor, k: int) -> torch.Tensor:
    return a.repeat(k, *([1] * (a.dim() - 1)))


def converges(samples: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Statistics of K estimates (K, D) against the exact gradient (D): z-scores of the mean (D coordinates),
    their mean square (~1 for an unbiased estimator, ~1 + K bias^2 / var for a biased one), and the squared
    error of the mean over what the sample variance predicts for it, at K/16 and at K samples."""
    k = samples.shape[0]
    var = samples.var(0)
    z = (samples.mean(0) - exact) / (var / k).sqrt()
    out = {"z_max": float(z.abs().max()), "chi2": float(z.pow(2).mean())}
    for name, m in (("ratio_k16", k // 16), ("ratio_k", k)):
        out[name] = float((samples[:m].mean(0) - exact).pow(2).sum() / (var.sum() / m))
    return out


def assert_unbiased(samples, exact, eprop):
    stats = converges(samples, exact)
    assert stats["z_max"] < 5 and stats["chi2"] < 2.5, stats
    assert 0.1 < stats["ratio_k16"] < 4 and 0.1 < stats["ratio_k"] < 4, stats  # error^2 ~ var / K at both K
    # power: the same noise around e-prop's (biased) mean is rejected, and so is a 20% shorter mean (rho = 0.8)
    biased = converges(samples - exact + eprop, exact)
    assert biased["chi2"] > 10 and biased["ratio_k"] > 10, biased
    short = converges(0.8 * samples, exact)
    assert short["z_max"] >= 5 or short["chi2"] >= 2.5, short


def test_uoro_mean_converges_to_the_gradient_at_the_rate_of_its_variance():
    net, batch, objective, exact, eprop = setup_exact()
    k = 4000
    x = batch[0]
    h, r = rollout(net, x)
    psi = slopes(net, h)
    _, _, d_r = readout_part(net, r, batch, objective)
    signs = draw_signs((k * B, T, N), torch.Generator().manual_seed(5), r)
    per_trial = uoro_estimates(net, replicate(r, k), replicate(psi, k), replicate(presynaptic(net, r, x), k),
                               replicate(psi * d_r, k), signs)
    samples = flat(per_trial.reshape(k, B, N, -1).sum(1))
    assert_unbiased(samples, exact, eprop)


def np_samples(net, batch, objective, xi: torch.Tensor, sigma: float) -> torch.Tensor:
    """K node-perturbation estimates (K, D) of the batch gradient for standard-normal xi (K * B, T, N)."""
    k = xi.shape[0] // B
    big = tuple(replicate(a, k) for a in batch)
    _, r = rollout(net, big[0])
    per_trial = perturbation_estimates(net, big, objective, None, r, sigma * xi, sigma)
    return flat(per_trial.reshape(k, B, N, -1).sum(1)) * k  # the replicated batch's loss is averaged over k copies


def test_node_perturbation_mean_converges_to_the_gradient_at_the_rate_of_its_variance():
    net, batch, objective, exact, eprop = setup_exact()
    k = 4000
    xi = torch.randn(k * B, T, N, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert_unbiased(np_samples(net, batch, objective, xi, 1e-3), exact, eprop)


def test_node_perturbation_bias_shrinks_as_sigma_squared():
    """With common random numbers and antithetic pairs (xi, -xi), estimate minus its linearisation
    (dL/du . xi) sum_t xi_t z_t has mean = the bias, and no O(sigma) noise: bias(sigma) / bias(sigma/2) -> 4."""
    net, batch, objective, exact, _ = setup_exact()
    k = 500
    xi = torch.randn(k * B, T, N, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    big = tuple(replicate(a, k) for a in batch)
    zero = torch.zeros(k * B, T, N, dtype=torch.float64, requires_grad=True)
    _, r = rollout(net, big[0], perturbation=zero)
    (d_u,) = torch.autograd.grad(objective.data_loss(net.readout(r), big[1], big[2]), zero)
    eligibility = torch.einsum("btp,btq->bpq", xi, presynaptic(net, r.detach(), big[0]))
    lin = (d_u * xi).sum((1, 2))[:, None, None] * eligibility  # (dL/du . xi) sum_t xi_t z_t, per trial
    linear = flat(lin.reshape(k, B, N, -1).sum(1)) * k
    assert (linear.mean(0) - exact).norm() < 0.5 * exact.norm()  # the linearisation itself is unbiased

    def bias(sigma):
        both = np_samples(net, batch, objective, xi, sigma) + np_samples(net, batch, objective, -xi, sigma)
        return (both / 2 - linear).mean(0)

    b1, b2, b3 = bias(0.2), bias(0.1), bias(0.05)
    assert 3.0 < b1.norm() / b2.norm() < 5.0 and 3.0 < b2.norm() / b3.norm() < 5.0, (b1.norm(), b2.norm(), b3.norm())
    assert b1.norm() < 0.2 * exact.norm()


# ----- draws: reproducible, exact on resume, not consumed by measurements -----------------------------------
@pytest.mark.parametrize("rule_name", ["uoro", "node_perturbation"])
def test_stochastic_draws_are_keyed_by_seed_and_step(rule_name):
    net, batch, objective = make_net(), make_batch(), Objective("ce")

    def rule(seed):
        torch.manual_seed(seed)  # the run's seed, as seed_everything sets it before the rule is built
        return build_rule(rule_name, net)

    def train_draw(r, step):
        r.on_step(step)
        return grads(r.surrogate(net, batch, objective), net)["W_h"]

    a, b = rule(0), rule(0)
    steps_a = [train_draw(a, s) for s in range(3)]
    # b: measurements (no on_step) interleaved, then a resume from a's state after step 1
    b.surrogate(net, batch, objective)
    assert torch.equal(train_draw(b, 0), steps_a[0])
    b.surrogate(net, batch, objective)
    b.surrogate(net, batch, objective)
    assert torch.equal(train_draw(b, 1), steps_a[1])
    resumed = rule(123)
    resumed.load_state_dict(b.state_dict())  # b's state after step 1
    assert torch.equal(train_draw(resumed, 2), steps_a[2])
    assert not torch.equal(steps_a[0], steps_a[1])  # fresh noise every step
    assert not torch.equal(train_draw(rule(1), 0), steps_a[0])  # another seed, other noise
    measured = grads(a.surrogate(net, batch, objective), net)["W_h"]
    assert not torch.equal(measured, steps_a[2])  # a measurement draws its own


# ----- end to end --------------------------------------------------------------------------------------------
QUICK = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=8", "eval_every=4",
         "checkpoint_every=0", "task.train_size=32", "task.test_size=32", "task.batch_size=16",
         "model.hidden_size=16", "curvature.batch_size=16", "curvature.every_n_steps=4",
         "alignment.every_n_steps=2", "model.noise_std=0.1"]


@pytest.mark.slow
@pytest.mark.parametrize("rule_name", ["uoro", "node_perturbation"])
def test_resume_is_exact_and_measurements_do_not_steer(tmp_path, rule_name):
    from conftest import assert_resume_exact_and_unsteered
    runs = assert_resume_exact_and_unsteered(QUICK + [f"rule={rule_name}"], tmp_path)
    assert runs["full"]["status"] == "ok" and math.isfinite(runs["full"]["rho_mean"])
    assert runs["part"]["steps"] == 4 and runs["resumed"]["steps"] == 8


@pytest.mark.parametrize("loss,noise_std", [("ce", 0.0), ("mse", 0.1)])
def test_node_perturbation_update_is_the_sum_of_its_per_trial_estimates(loss, noise_std):
    """The training step forms the summed update in one product after one doubled pass; it must equal the
    plainly written per-trial estimates (separate clean and perturbed passes) summed over the batch."""
    net, batch, objective = make_net(noise_std=noise_std), make_batch(loss), Objective(loss, 0.01)
    noise = torch.randn(B, T, N, generator=torch.Generator().manual_seed(8), dtype=torch.float64) \
        if noise_std else None
    rule = build_rule("node_perturbation", net, sigma=0.05)
    got = grads(rule.surrogate(net, batch, objective, noise=noise, generator=torch.Generator().manual_seed(9)), net)
    zeta = 0.05 * torch.randn(B, T, N, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    _, r = rollout(net, batch[0], noise)
    want = perturbation_estimates(net, batch, objective, noise, r, zeta, 0.05).sum(0)
    assert torch.allclose(flat_params(got), flat(want) + flat_params(l2_part(net, objective)), rtol=1e-10, atol=1e-12)


def l2_part(net, objective) -> dict[str, torch.Tensor]:
    """The L2 regulariser's exact gradient on W_h, W_x, b (the readout part of the surrogate adds it)."""
    return {"W_h": objective.l2 * net.W_h.detach(), "W_x": objective.l2 * net.W_x.detach(),
            "b": torch.zeros_like(net.b)}
