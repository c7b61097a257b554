"""BPTT plus an orthogonal error (the error-vector control of Theorem 1): the exact gradient g plus a random
vector e orthogonal to it, of length `e_ratio` times |g|, so that rho = 1 and only the error is e-prop's.

For each perturbed parameter P (W_h, W_x and b; the readout keeps its exact gradient, as in every rule,
SPEC section 4), with n_P ~ N(0, I) drawn over the entries the forward pass uses (W_h's diagonal is no
synapse, so it gets none):

    e_P = e_ratio |g_P| (n_P - (n_P . g_P) g_P / |g_P|^2) / |n_P - (n_P . g_P) g_P / |g_P|^2|
    estimate_P = g_P + e_P                               (e_P = 0 where g_P = 0)

Per tensor, so e is orthogonal to g and |e| = e_ratio |g| on each of W_h, W_x, b and on all of them
together: the alignment callback, which measures W_h, reads align/rho = 1 and align/e_ratio = e_ratio.
Given g, e's direction is uniform on the sphere orthogonal to g, so E[estimate] = g: no bias.

e_ratio comes from `rule.e_ratio`, or from an earlier run's recorded `align_e_ratio` history
(`rule.e_ratio_from=<run dir or glob naming one>`, step by step as bptt_scaled's rho_mode=history: the last
value measured at or before the step; `rule.e_ratio_wait_s` waits for that record in a study sweep).

Randomness: StochasticRule.generator, keyed on (rule seed, step, stream): reproducible, exact on resume,
measurements draw their own. Under DDP the key leaves the rank out and the training step averages the ranks'
exact gradients first, so every rank draws the same n and orthogonalises it against the same (whole-batch)
g: DDP's average of the ranks' g_rank + e is g + e, the one-process estimate on the whole batch. A
measurement call stays on its rank's slice (no collective): it is the rule applied to the batch it sees.

Autograd form: one backward for g (all parameters), then surrogate = loss + sum_P (g_P + e_P) . (P - P),
whose value is the loss and whose gradient is the estimate (the readout's part is its exact gradient).
"""
from __future__ import annotations

import math

import torch

from modules import run_records as records
from modules.rules import register
from modules.rules.base import Estimate, FollowsHistory, StochasticRule

E_RATIO_KEY = "align_e_ratio"  # the summary history name of align/e_ratio (callbacks/run_record.py)


def perturbed(net) -> list[tuple[str, torch.Tensor]]:
    """The parameters that get the error: W_h, W_x and b (when the network has one); not the readout."""
    return [(name, p) for name, p in (("W_h", net.W_h), ("W_x", net.W_x), ("b", net.b)) if p is not None]


def orthogonal_error(g: torch.Tensor, draw: torch.Tensor, e_ratio: float) -> torch.Tensor:
    """draw (any shape, g's) with its component along g removed, scaled to length e_ratio |g| (zeros when
    g is 0). No branch on a tensor's value: no host sync per step on a GPU."""
    tiny = torch.finfo(g.dtype).tiny  # 0/tiny = 0: a zero g gives a zero projection and a zero length
    gg = (g * g).sum()
    e = draw - (draw * g).sum() / gg.clamp_min(tiny) * g
    return e * (e_ratio * gg.sqrt() / e.norm().clamp_min(tiny))


def check_e_ratio(value, where: str) -> float:
    """A finite number >= 0, or ValueError naming `where`."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}={value!r}: must be a finite number >= 0") from None
    if isinstance(value, bool) or not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"{where}={value!r}: must be a finite number >= 0")
    return ratio


@register
class NoisyBPTT(FollowsHistory, StochasticRule):
    name = "bptt_noise"
    per_rank_draws = False  # one n for all ranks, against the all-reduced g (module docstring)

    def __init__(self, net, e_ratio: float | None = None, e_ratio_from: str | None = None,
                 e_ratio_wait_s: float = 0.0):
        super().__init__(net)
        if e_ratio is None and e_ratio_from is None:
            raise ValueError("rule=bptt_noise needs rule.e_ratio=<number >= 0> or rule.e_ratio_from=<run dir>")
        if e_ratio is not None:  # an explicit e_ratio wins
            points = [(0, check_e_ratio(e_ratio, "rule.e_ratio"))]
        else:
            points = records.recorded_history(e_ratio_from, E_RATIO_KEY, "rule.e_ratio_from", e_ratio_wait_s)
            for step, value in points:
                check_e_ratio(value, f"rule.e_ratio_from: '{e_ratio_from}' at step {step} has align_e_ratio")
        self.register_history("e_ratio", points)  # checkpointed: a resume is exact

    @property
    def e_ratio(self) -> float:
        """e_ratio at the current step."""
        return self.history_value("e_ratio", self.step)

    def surrogate(self, net, batch, objective, noise=None, generator=None):
        training = self._training_call  # read before generator() consumes it
        y_hat, _ = net(batch[0], noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        params = list(net.parameters())
        grads = dict(zip(params, torch.autograd.grad(loss, params)))
        estimate = dict(grads)
        with torch.no_grad():
            parts = perturbed(net)
            g = [grads[p] for _, p in parts]
            if training and world_size() > 1:  # the whole batch's g, the same on every rank
                g = all_reduce_mean(g)
            gen = generator if generator is not None else self.generator(batch[0].device)
            ratio = self.e_ratio
            for (name, p), g_p in zip(parts, g):
                draw = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
                if name == "W_h":
                    draw = draw * net.no_autapse
                estimate[p] = grads[p] + orthogonal_error(g_p, draw, ratio)
        surrogate = loss.detach() + sum((estimate[p] * (p - p.detach())).sum() for p in params)
        return Estimate(surrogate, loss.detach(), y_hat.detach())


def world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over ranks of each tensor (one collective on their concatenation)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    return [chunk.view_as(t) for chunk, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
