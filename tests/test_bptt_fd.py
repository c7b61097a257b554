"""rule=bptt (gradient of its surrogate) equals central finite differences of the training objective, in
float64 on a tiny net, for every parameter entry. Relu nets are kept away from kinks: the test first checks
that no pre-activation comes within the finite-difference step's reach of 0."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rule_reference as ref
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import build_rule

N_IN, N, N_OUT, T, B = 2, 5, 2, 5, 3
EPS = 1e-6


def tiny_problem(activation, alpha, loss, seed=0):
    torch.manual_seed(seed)
    net = RateRNN(N_IN, N, N_OUT, alpha=alpha, activation=activation).double()
    with torch.no_grad():
        net.W_h.normal_(0.0, 1.2 / math.sqrt(N))
        net.W_x.normal_(0.0, 1.0)
        net.b.uniform_(-0.2, 0.6)
        net.W_out.normal_(0.0, 1.0)
        net.b_out.normal_(0.0, 0.3)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(B, T, N_IN, generator=g, dtype=torch.float64)
    y = torch.randint(N_OUT, (B, T), generator=g) if loss == "ce" else torch.randn(B, T, N_OUT, generator=g,
                                                                                   dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[:, :2] = 0.0  # early steps carry no loss: their credit must come through time
    return net, (x, y, mask), Objective(loss, l2=0.01)


def pre_activation_margin(net, x) -> float:
    """Smallest |h| over batch, time and units: relu's kink is at h = 0."""
    params = {k: p.detach().numpy() for k, p in net.named_parameters()}
    params["W_h"] = net.recurrent_weight().detach().numpy()
    return float(np.abs(ref.forward(params, x.numpy(), net.alpha, net.activation)["h"]).min())


def central_differences(net, batch, objective) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for name, p in net.named_parameters():
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                values = []
                for step in (EPS, -EPS):
                    flat[i] = old + step
                    y_hat, _ = net(batch[0])
                    values.append(objective(y_hat, batch[1], batch[2], [net.W_x, net.W_h, net.W_out]).item())
                flat[i] = old
                gflat[i] = (values[0] - values[1]) / (2 * EPS)
            out[name] = g
    return out


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
def test_bptt_equals_finite_differences(activation, alpha, loss):
    net, batch, objective = tiny_problem(activation, alpha, loss)
    if activation == "relu":
        # a step of EPS moves h by at most ~EPS * (|x| + |r|) * T; stay far from the kink
        assert pre_activation_margin(net, batch[0]) > 1e-4
        _, r = net(batch[0])
        assert 0.2 < (r > 0).double().mean() < 0.9, "relu units should be partly active, partly silent"
    estimate = build_rule("bptt", net).surrogate(net, batch, objective)
    params = dict(net.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(estimate.surrogate, list(params.values()))))
    fd = central_differences(net, batch, objective)
    for name in params:
        # the diagonal of W_h has no effect on the network: only the L2 term's gradient remains there
        torch.testing.assert_close(grads[name], fd[name], rtol=1e-6, atol=1e-8, msg=lambda m: f"{name}: {m}")
    # and the gradient is not trivially small (the test could fail)
    assert grads["W_h"].abs().max() > 1e-3
