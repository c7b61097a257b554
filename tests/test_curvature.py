"""Curvature against dense references: Lanczos top-k = eigvalsh of the dense Hessian (torch.autograd.
functional.hessian), the pyhessian backend within its tolerance, Hutchinson trace and relative flatness
against their dense definitions, and the callback leaves training state alone."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.func import functional_call

from callbacks.curvature import Curvature
from modules.hessian import (HessianOperator, basis_probes, hutchinson_trace, lanczos_eigenvalues,
                             rademacher_probes, relative_flatness, top_eigenvalues)
from modules.lanczos import lanczos
from modules.objective import Objective
from modules.rnn import RateRNN


def tiny(activation="tanh", seed=0, n=6):
    """A float64 network whose Hessian is small enough to write down densely, and a batch (x, y, mask)."""
    torch.manual_seed(seed)
    net = RateRNN(3, n, 2, alpha=0.5, activation=activation, readout_scale=1.0).double()
    x = torch.randn(10, 7, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (10, 7))
    mask = torch.zeros(10, 7, dtype=torch.float64)
    mask[:, -3:] = 1.0
    return net, (x, y, mask)


def dense_hessian(net, batch, l2, names):
    """The dense Hessian of cross-entropy on masked steps + l2/2 |W_x, W_h, W_out|^2, written out here."""
    x, y, mask = batch
    base = {k: p.detach() for k, p in net.named_parameters()}
    primals = tuple(base[k].clone() for k in names)

    def objective(*chosen):
        params = base | dict(zip(names, chosen))
        y_hat, _ = functional_call(net, params, (x,))
        logp = torch.log_softmax(y_hat, -1).gather(-1, y[..., None])[..., 0]
        data = -(logp * mask).sum() / mask.sum()
        return data + 0.5 * l2 * sum(params[k].pow(2).sum() for k in ("W_x", "W_h", "W_out"))

    blocks = torch.autograd.functional.hessian(objective, primals)
    sizes = [p.numel() for p in primals]
    return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(names))], 1)
                      for i in range(len(names))], 0)


ALL = ["W_x", "W_h", "b", "W_out", "b_out"]


@pytest.mark.parametrize("params,names", [("recurrent", ["W_h"]), ("all", ALL)])
@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_lanczos_top3_equals_dense_eigvalsh(params, names, l2):
    net, batch = tiny()
    dense = dense_hessian(net, batch, l2, names)
    expected = torch.linalg.eigvalsh(dense).flip(0)[:3]
    op = HessianOperator(net, Objective("ce", l2), batch, params)
    assert op.names == names
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), dense @ v, rtol=1e-10, atol=1e-12)
    result = lanczos_eigenvalues(op, k=3, tol=1e-6, max_iter=200)
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-4, atol=0.0)
    top1 = top_eigenvalues(net, Objective("ce", l2), batch, params, k=1, tol=1e-6, max_iter=200)
    assert top1[0] == pytest.approx(float(expected[0]), rel=1e-4)


@pytest.mark.parametrize("activation,dale,loss,alpha,l2", [
    ("relu", False, "ce", 0.3, 0.0), ("relu", True, "mse", 1.0, 0.01), ("tanh", True, "ce", 0.5, 0.01),
    ("tanh", False, "mse", 1.0, 0.0), ("softplus", True, "mse", 0.3, 0.05), ("softplus", False, "ce", 1.0, 0.0)])
def test_hand_written_hessian_products_equal_autograd(activation, dale, loss, alpha, l2):
    """modules/recurrent_hessian.py (R-operator by hand, used for W_h by default) against torch.func's
    reverse-over-reverse products, in float64: products (one and several at once) and the gradient.
    Trials have different loss steps; Dale's law makes W_h's map to the effective weights sign-dependent."""
    torch.manual_seed(3)
    net = RateRNN(3, 7, 4, alpha=alpha, activation=activation, dale=dale, readout_scale=1.0).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 6, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5, 6), generator=g) if loss == "ce" else torch.randn(5, 6, 4, generator=g,
                                                                                   dtype=torch.float64)
    mask = torch.zeros(5, 6, dtype=torch.float64)
    mask[:, -2:], mask[0, 1], mask[3, 2] = 1.0, 1.0, 1.0
    objective = Objective(loss, l2)
    ours = HessianOperator(net, objective, (x, y, mask), "recurrent")
    ref = HessianOperator(net, objective, (x, y, mask), "recurrent", method="autograd")
    assert ours._analytic is not None and ref._analytic is None
    vs = torch.randn(3, ours.dim, generator=g, dtype=torch.float64)
    want = torch.stack([ref.matvec(v) for v in vs])
    torch.testing.assert_close(ours.matmat(vs), want, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(ours.matvec(vs[0]), want[0], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(ours.gradient, ref.gradient, rtol=1e-10, atol=1e-13)
    assert ours.products == 4


def test_lanczos_finds_largest_algebraic_not_largest_magnitude():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    spectrum = torch.linspace(-1.0, 1.0, 40, dtype=torch.float64)
    spectrum[0], spectrum[-3:] = -10.0, torch.tensor([2.0, 2.5, 3.0], dtype=torch.float64)
    a = q @ torch.diag(spectrum) @ q.T
    result = lanczos(lambda v: a @ v, torch.randn(40, generator=g, dtype=torch.float64), k=3, tol=1e-8)
    assert result.converged and result.iterations < 40
    torch.testing.assert_close(result.eigenvalues, torch.tensor([3.0, 2.5, 2.0], dtype=torch.float64))
    # the stopping rule is residual-based: stopping early leaves the residual above tol
    early = lanczos(lambda v: a @ v, torch.randn(40, generator=g, dtype=torch.float64), k=1, tol=1e-12,
                    max_iter=3)
    assert not early.converged and early.iterations == 3


@pytest.mark.parametrize("params,names", [("recurrent", ["W_h"]), ("all", ALL)])
def test_pyhessian_backend_agrees_and_leaves_state_alone(params, names):
    net, batch = tiny()
    dense = dense_hessian(net, batch, 0.0, names)
    largest_magnitude = torch.linalg.eigvalsh(dense).abs().max()
    rng = torch.get_rng_state()
    values = top_eigenvalues(net, Objective("ce"), batch, params, k=1, tol=1e-7, max_iter=2000, seed=3,
                             backend="pyhessian")
    # power iteration: the eigenvalue of largest magnitude, to about its relative-change tolerance
    assert abs(values[0]) == pytest.approx(float(largest_magnitude), rel=1e-3)
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched (forked)
    assert net.training and all(p.grad is None for p in net.parameters())


def test_trace_and_relative_flatness_equal_dense_definitions():
    net, batch = tiny(n=5)
    l2 = 0.05
    h = dense_hessian(net, batch, l2, ["W_h"])
    op = HessianOperator(net, Objective("ce", l2), batch, "recurrent")
    assert hutchinson_trace(op, basis_probes(op)) == pytest.approx(float(h.trace()), rel=1e-10)

    # Petzka et al.: kappa = sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}), H_{s,s'}[t, t'] = d2L / dW[s,t] dW[s',t']
    w = net.W_h.detach()
    n = w.shape[0]
    h4 = h.view(n, n, n, n)
    kappa = sum(float(w[s] @ w[s2]) * float(torch.diagonal(h4[s, :, s2, :]).sum())
                for s in range(n) for s2 in range(n))
    assert relative_flatness(op, net.W_h, basis_probes(op)) == pytest.approx(kappa, rel=1e-10)

    # Rademacher probes: unbiased, within 5 standard errors
    g = torch.Generator().manual_seed(0)
    for exact, fn in [(float(h.trace()), lambda v: hutchinson_trace(op, [v])),
                      (kappa, lambda v: relative_flatness(op, net.W_h, [v]))]:
        samples = torch.tensor([fn(v) for v in rademacher_probes(op, 400, g)])
        assert abs(float(samples.mean()) - exact) < 5 * float(samples.std()) / 20 + 1e-12


class FakeDataModule:
    def __init__(self, batch):
        self.batch, self.calls = batch, 0

    def curvature_batch(self, size, seed):
        self.calls += 1
        return tuple(t[:size] for t in self.batch)


def test_callback_reports_keys_matches_dense_and_touches_nothing():
    net, batch = tiny(activation="relu")
    l2 = 0.01
    expected = torch.linalg.eigvalsh(dense_hessian(net, batch, l2, ["W_h"])).flip(0)[:2]
    cb = Curvature(every_n_steps=1, k=2, tol=1e-7, max_iter=100, trace=True, trace_samples=5, flatness=True)
    dm = FakeDataModule(batch)
    trainer = SimpleNamespace(datamodule=dm, global_step=4)
    module = SimpleNamespace(net=net, objective=Objective("ce", l2))
    rng = torch.get_rng_state()
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    out = cb.measure(trainer, module)
    again = Curvature(every_n_steps=1, k=2, tol=1e-7, max_iter=100, trace=True, trace_samples=5,
                      flatness=True).measure(SimpleNamespace(datamodule=dm, global_step=4), module)
    assert set(out) == {"curvature/lambda_max", "curvature/lambda_2", "curvature/trace",
                        "curvature/rel_flatness", "curvature/lambda_wnorm"}
    assert out == again and dm.calls == 2  # deterministic; each callback draws the curvature batch once
    cb.measure(trainer, module)
    assert dm.calls == 2 and cb.ritz.shape == (2, 36)  # warm-start state kept
    assert out["curvature/lambda_max"] == pytest.approx(float(expected[0]), rel=1e-4)
    assert out["curvature/lambda_2"] == pytest.approx(float(expected[1]), rel=1e-4)
    assert out["curvature/lambda_wnorm"] == pytest.approx(
        out["curvature/lambda_max"] * float(net.W_h.detach().pow(2).sum()), rel=1e-12)
    assert torch.equal(torch.get_rng_state(), rng)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(p, before[k]) for k, p in net.named_parameters())


def spectrum_matrix(spectrum, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(spectrum, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("gap,tol", [(1.0, 1e-4), (1e-2, 1e-4), (1e-3, 1e-4), (1.0, 1e-6), (1e-2, 1e-6)])
def test_stopping_rule_keeps_its_promised_relative_accuracy(gap, tol):
    """The r^2/gap rule stops early, yet every returned eigenvalue is within tol (relative) of the dense
    one, also when the top gap is small (2e-3 and 2e-4 of lambda_1 here). Its limit (README, lanczos.py):
    a top pair closer than about sqrt(tol) relative that the Krylov space has not split yet can fool the
    Ritz-gap estimate (gap 1e-3 at tol 1e-6 does: 6e-6)."""
    spectrum = torch.linspace(-2.0, 4.0, 120, dtype=torch.float64)
    spectrum[-1] = spectrum[-2] + gap
    a = spectrum_matrix(spectrum)
    exact = torch.linalg.eigvalsh(a).flip(0)[:2]
    for k in (1, 2):
        result = lanczos(lambda v: a @ v, torch.randn(120, generator=torch.Generator().manual_seed(2),
                                                       dtype=torch.float64), k=k, tol=tol, max_iter=120)
        assert result.converged
        rel = ((result.eigenvalues - exact[:k]).abs() / exact[:k].abs())
        assert (rel <= tol).all() and (result.errors <= tol * result.eigenvalues.abs()).all()
        assert (result.errors + 1e-12 >= (result.eigenvalues - exact[:k]).abs()).all()  # the bound holds (to rounding)


@pytest.mark.parametrize("params", ["recurrent", "all"])
def test_stopping_rule_on_tiny_nets_is_within_tol_of_dense_and_cheaper(params):
    names = ["W_h"] if params == "recurrent" else ALL
    for seed, activation in [(0, "tanh"), (3, "relu")]:
        net, batch = tiny(activation=activation, seed=seed)
        exact = torch.linalg.eigvalsh(dense_hessian(net, batch, 0.01, names)).flip(0)[:3]
        op = HessianOperator(net, Objective("ce", 0.01), batch, params)
        for k in (1, 3):
            result = lanczos_eigenvalues(op, k=k, tol=1e-4, max_iter=200)
            assert result.converged
            assert ((result.eigenvalues - exact[:k]).abs() <= 1e-4 * exact[:k].abs()).all()
            # cheaper than the residual test r <= tol |theta| it replaces, which needs about twice the steps
            assert (result.residuals > 1e-4 * result.eigenvalues.abs()).any() or result.iterations <= k + 2


def test_warm_start_equals_cold_within_tol_and_saves_products():
    net, batch = tiny(n=8)
    objective = Objective("ce", 0.01)
    op = HessianOperator(net, objective, batch, "recurrent")
    exact = torch.linalg.eigvalsh(dense_hessian(net, batch, 0.01, ["W_h"])).flip(0)[:2]
    first = lanczos_eigenvalues(op, k=2, tol=1e-6, max_iter=200, vectors=True)
    with torch.no_grad():  # the weights move a little, as between two measurements of a run
        net.W_h.add_(0.01 * torch.randn(net.W_h.shape, generator=torch.Generator().manual_seed(5),
                                        dtype=torch.float64))
    exact = torch.linalg.eigvalsh(dense_hessian(net, batch, 0.01, ["W_h"])).flip(0)[:2]
    op = HessianOperator(net, objective, batch, "recurrent")
    cold = lanczos_eigenvalues(op, k=2, tol=1e-6, max_iter=200)
    warm = lanczos_eigenvalues(op, k=2, tol=1e-6, max_iter=200, previous=first.vectors)
    torch.testing.assert_close(warm.eigenvalues, cold.eigenvalues, rtol=2e-6, atol=0.0)
    torch.testing.assert_close(warm.eigenvalues, exact, rtol=1e-6, atol=0.0)
    assert warm.iterations < cold.iterations


def test_warm_start_state_survives_a_checkpoint(tmp_path):
    """The callback's Ritz vectors go through the checkpoint unchanged, so the next measurement after a
    resume equals the uninterrupted one bit for bit (the whole-run version: tests/test_callbacks_observe)."""
    net, batch = tiny()
    module = SimpleNamespace(net=net, objective=Objective("ce", 0.01))
    trainer = SimpleNamespace(datamodule=FakeDataModule(batch), global_step=0)
    whole = Curvature(k=2, tol=1e-6)
    whole.measure(trainer, module)
    torch.save(whole.state_dict(), tmp_path / "cb.pt")
    resumed = Curvature(k=2, tol=1e-6)
    resumed.load_state_dict(torch.load(tmp_path / "cb.pt", weights_only=False))
    with torch.no_grad():
        net.W_h.mul_(1.01)
    trainer.global_step = 5
    assert resumed.measure(trainer, module) == whole.measure(trainer, module)
    assert resumed.product_counts == whole.product_counts


def test_operator_does_not_see_later_inplace_changes_of_the_weights():
    net, batch = tiny()
    op = HessianOperator(net, Objective("ce", 0.01), batch, "recurrent")
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = op.matvec(v)
    with torch.no_grad():  # as load_state_dict or an optimizer step would
        for p in net.parameters():
            p.mul_(2.0)
    assert torch.equal(op.matvec(v), before)


def test_vmapped_products_equal_one_by_one():
    net, batch = tiny()
    op = HessianOperator(net, Objective("ce", 0.01), batch, "all")
    vs = torch.randn(5, op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(op.matmat(vs), torch.stack([op.matvec(v) for v in vs]), rtol=1e-12, atol=1e-12)
    assert op.products == 10


def test_bad_settings_fail_with_the_key_named():
    with pytest.raises(ValueError, match="curvature.params"):
        Curvature(params="readout")
    with pytest.raises(ValueError, match="max_iter"):
        Curvature(k=5, max_iter=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lanczos_runs_unchanged_on_cuda():
    net, batch = tiny()
    cpu = top_eigenvalues(net, Objective("ce", 0.05), batch, "all", k=2, tol=1e-7)
    gpu = top_eigenvalues(net.cuda(), Objective("ce", 0.05), batch, "all", k=2, tol=1e-7)
    assert gpu == pytest.approx(cpu, rel=1e-6)


def test_a_network_whose_loss_overflowed_is_a_diverged_run_not_a_linear_algebra_error():
    """Weights that overflow the loss make every Hessian-vector product NaN; Lanczos says so (eigh used to
    fail on the NaN tridiagonal matrix with 'ill-conditioned', and the run was recorded as failed, as a BPTT
    seqMNIST run of the third edition was before this fix) and the callback reports the run as diverged at
    that step."""
    from modules.lanczos import NonFiniteOperator
    from modules.lit_module import Diverged
    with pytest.raises(NonFiniteOperator, match="Lanczos step 1"):
        lanczos(lambda v: v * float("nan"), torch.ones(4, dtype=torch.float64))
    net, batch = tiny()
    with torch.no_grad():
        net.W_h.fill_(float("inf"))
    module = SimpleNamespace(net=net, objective=Objective("ce", 0.01))
    trainer = SimpleNamespace(datamodule=FakeDataModule(batch), global_step=200)
    with pytest.raises(Diverged, match="diverged at step 200: the Hessian-vector product"):
        Curvature(k=1).measure(trainer, module)
