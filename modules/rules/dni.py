"""DNI: decoupled neural interfaces, synthetic gradients for the recurrent state (Jaderberg et al. 2017).
A rule that learns (modules/rules/base.py): the synthetic-gradient module (A, C, c) is its own.

Truncated BPTT with the state cut every `window` steps (as tbptt: the graph is detached before step t when
t % window == 0), and at each cut the gradient the future would have sent into the last state h_s of the
window is replaced by a synthetic one, a linear function of that state and the step's target (the
conditional DNI of the paper; linear, as in its RNN experiments' simplest form):

    sg_s = A h_s + C y_s + c        (A: N x N, C: N x N_out, c: N; y_s one-hot for cross-entropy, the target for MSE)
    network's estimate: BPTT inside each window, with sg_s / B added to dL/dh_s at every cut s (B trials)

The module learns to predict the gradient it stands in for, bootstrapped (the paper's scheme): the target
at a cut is what BPTT inside the next window sends back into h_s, including that window's own synthetic
gradient at its end,

    target_s = B dS/dh_s      S = loss + sum_s' <stopgrad(sg_s') / B, h_s'>  (the network's surrogate)
    aux = 1 / (2 B) sum_{cuts s} sum_trials |sg_s - stopgrad(target_s)|^2

Both are per trial: the factor B makes sg_s the gradient of one trial's share times the batch size, so the
module's target does not depend on the batch size (a DDP rank sees half the batch and, with the loss a mean
over its half, twice the per-trial gradient; B dS/dh is the same on both). target_s needs one extra
backward pass through the windows (torch.autograd.grad into the detached states), so a step costs about two
tBPTT passes. The readout and the L2 term get their exact gradients (the readout is inside every window).

Choices where the paper is silent for this network: the state is h (r = f(h) is recomputed from it); the
module is linear and starts at zero (sg = 0: the rule starts as tbptt with the same window). Defaults chosen
by pilot (dms study preset, seed 100; docs/study/pilots-rules.md): window 5 and plain SGD at lr 1e-3 for the
module. Fully online (window 1) with the paper's Adam at 1e-3 diverged on 2 of 3 pilot seeds (and within 20
steps in bench.py): bootstrapping through 50 one-step windows feeds the module's errors back into its own
targets, and Adam's normalised step ignores how small the targets (per-trial gradients) are; window 1 also
diverged with Adam at 1e-5 or SGD at 1e-2, window 10 with Adam at 1e-4.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from modules.rules import register
from modules.rules.base import Estimate, Rule


def cut_states(net, x: torch.Tensor, window: int, noise: torch.Tensor | None = None):
    """The exact forward pass (rtrl.rollout's operations) with the state detached before every step t with
    t % window == 0, t > 0. Returns r (B, T, N), the windows' last states h_s (graph kept), the detached
    states that start the next windows (leaves that require grad), and the cut steps s."""
    alpha, w_h = net.alpha, net.recurrent_weight()
    drive = F.linear(x, net.W_x, net.b)
    if noise is not None:
        drive = drive + (net.noise_std / math.sqrt(alpha)) * noise
    h = x.new_zeros(x.shape[0], net.hidden_size)
    r = h
    rates, ends, leaves, cuts = [], [], [], []
    for t, drive_t in enumerate(drive.unbind(1)):
        if t > 0 and t % window == 0:
            ends.append(h)
            cuts.append(t - 1)
            h = h.detach().requires_grad_(True)
            leaves.append(h)
            r = net.f(h)
        u = drive_t + r @ w_h.T
        h = u if alpha == 1.0 else (1.0 - alpha) * h + alpha * u
        r = net.f(h)
        rates.append(r)
    return torch.stack(rates, 1), ends, leaves, cuts


def target_code(y: torch.Tensor, n_out: int, dtype) -> torch.Tensor:
    """The step's target as the module sees it (B, T, N_out): one-hot class (cross-entropy) or the value (MSE)."""
    return F.one_hot(y, n_out).to(dtype) if not y.is_floating_point() else y.to(dtype)


@register
class DNI(Rule):
    name = "dni"
    learns = True

    def __init__(self, net, window: int = 5, lr: float = 1e-3, optimizer: str = "sgd"):
        super().__init__(net)  # conf/rule/dni.yaml explains the defaults
        if int(window) != window or window < 1:
            raise ValueError(f"rule.window={window!r} is not allowed; it must be an integer >= 1")
        self.window = int(window)
        self.learn_with(lr, optimizer)
        n, n_out = net.hidden_size, net.output_size
        kw = dict(dtype=net.W_h.dtype, device=net.W_h.device)
        self.sg_state = torch.nn.Parameter(torch.zeros(n, n, **kw))       # A
        self.sg_target = torch.nn.Parameter(torch.zeros(n, n_out, **kw))  # C
        self.sg_bias = torch.nn.Parameter(torch.zeros(n, **kw))           # c

    def synthetic(self, h: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """sg = A h + C y + c for states h (B, N) and target codes (B, N_out)."""
        return h @ self.sg_state.T + code @ self.sg_target.T + self.sg_bias

    def surrogate(self, net, batch, objective, noise=None):
        x, y, _ = batch
        r, ends, leaves, cuts = cut_states(net, x, self.window, noise)
        y_hat = net.readout(r)
        loss = self.objective_of(net, y_hat, batch, objective)
        if not cuts:  # one window: BPTT, and nothing for the module to learn from this batch
            return Estimate(loss, loss, y_hat, aux_loss=0.0 * sum(p.sum() for p in self.parameters()))
        n_trials = x.shape[0]
        code = target_code(y, net.output_size, r.dtype)
        sg = [self.synthetic(h_s.detach(), code[:, s]) for h_s, s in zip(ends, cuts)]
        surrogate = loss + sum((g.detach() / n_trials * h_s).sum() for g, h_s in zip(sg, ends))
        with torch.enable_grad():
            into_leaves = torch.autograd.grad(surrogate, leaves, retain_graph=True, allow_unused=True)
        aux = sum((g - n_trials * (t if t is not None else torch.zeros_like(g)).detach()).pow(2).sum()
                  for g, t in zip(sg, into_leaves)) / (2.0 * n_trials)
        return Estimate(surrogate, loss, y_hat, aux_loss=aux)
