"""The leaky rate RNN shared by every rule (SPEC section 3), batch-first, weights post x pre.

    u_t = W_x x_t + W_h r_{t-1} + b          r_0 = 0, h_0 = 0
    h_t = (1 - alpha) h_{t-1} + alpha u_t  (+ sqrt(alpha) * noise_std * xi_t while training)
    r_t = f(h_t)
    y_t = W_out r_t + b_out

The time loop is written by hand: cuDNN RNNs have no double backward, and curvature needs one.
The network knows one thing about rules: where to cut the graph (`truncation`), which never changes
what the forward pass computes, only what autograd sees.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "softplus": F.softplus}
TRUNCATIONS = ("none", "recurrent", "window")


def cell_types(hidden_size: int, n_cell_types: int) -> torch.Tensor:
    """Type index per unit. 1 type: all 0. 2 types: first 80% type 0 (E), rest type 1 (I).
    k > 2: the first 80% split evenly into k-1 excitatory types, the last 20% one inhibitory type."""
    if n_cell_types < 1:
        raise ValueError(f"n_cell_types must be >= 1, got {n_cell_types}")
    types = torch.zeros(hidden_size, dtype=torch.long)
    if n_cell_types == 1:
        return types
    n_exc = int(round(0.8 * hidden_size))
    types[n_exc:] = n_cell_types - 1
    bounds = torch.linspace(0, n_exc, n_cell_types).round().long()
    for k in range(n_cell_types - 1):
        types[bounds[k]:bounds[k + 1]] = k
    return types


class RateRNN(nn.Module):
    """Leaky rate RNN with a linear readout.

    forward(x) takes x of shape (B, T, N_in) and returns (y, r): readout (B, T, N_out) and rates (B, T, N).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *, alpha: float = 0.2,
                 activation: str = "relu", g: float = 1.0, bias: bool = True, noise_std: float = 0.0,
                 dale: bool = False, n_cell_types: int = 2, readout_scale: float = 0.1):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose one of: {', '.join(ACTIVATIONS)}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.alpha, self.activation, self.noise_std, self.dale = float(alpha), activation, noise_std, dale
        self.f = ACTIVATIONS[activation]

        self.W_x = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W_h = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.b = nn.Parameter(torch.zeros(hidden_size)) if bias else None
        self.W_out = nn.Parameter(torch.empty(output_size, hidden_size))
        self.b_out = nn.Parameter(torch.zeros(output_size))
        self.register_buffer("types", cell_types(hidden_size, n_cell_types))
        self.n_cell_types = n_cell_types
        # Dale's law: a unit's outgoing weights share its sign (E: +, I: -); the parameter holds magnitudes.
        sign = torch.ones(hidden_size)
        if dale:
            sign[self.types == n_cell_types - 1] = -1.0
        self.register_buffer("pre_sign", sign)
        self.register_buffer("no_autapse", 1.0 - torch.eye(hidden_size))
        self.reset_parameters(g, readout_scale)

    @torch.no_grad()
    def reset_parameters(self, g: float, readout_scale: float) -> None:
        n, n_in = self.hidden_size, self.input_size
        # He init for relu keeps rates alive; 1/N_in otherwise (SPEC section 3).
        gain_in = 2.0 if self.activation == "relu" else 1.0
        self.W_x.normal_(0.0, math.sqrt(gain_in / n_in))
        self.W_h.normal_(0.0, g / math.sqrt(n)).mul_(self.no_autapse)
        if self.dale:
            # magnitudes; inhibitory columns scaled up so that each unit's mean E and I input balance
            self.W_h.abs_()
            n_inh = int((self.pre_sign < 0).sum())
            if n_inh:
                self.W_h[:, self.pre_sign < 0] *= (n - n_inh) / n_inh
            # that balance makes inhibitory entries (n - n_inh) / n_inh times larger, which inflates the
            # spectral radius (about 2 g at 80% E): rescale so the RMS entry is g / sqrt(N) again, as without
            # Dale's law (otherwise a relu network starts chaotic, with a top Hessian eigenvalue of ~7000)
            rms = float((self.W_h * self.no_autapse).pow(2).sum() / (n * (n - 1))) ** 0.5
            self.W_h.mul_(g / (math.sqrt(n) * rms))
        self.W_out.normal_(0.0, readout_scale / math.sqrt(n))

    def recurrent_weight(self) -> torch.Tensor:
        """The effective W_h (post x pre): zero diagonal, and signed by the presynaptic type under Dale's law."""
        w = self.W_h
        if self.dale:
            w = w.abs() * self.pre_sign
        return w * self.no_autapse

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Private noise xi of shape (B, T, N), or None when the network is noiseless."""
        if self.noise_std <= 0:
            return None
        b, t, _ = x.shape
        return torch.randn(b, t, self.hidden_size, generator=generator, device=x.device, dtype=x.dtype)

    def readout(self, r: torch.Tensor) -> torch.Tensor:
        return F.linear(r, self.W_out, self.b_out)

    def forward(self, x: torch.Tensor, *, truncation: str = "none", window: int = 0,
                noise: torch.Tensor | None = None, stepwise_readout: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network. truncation='recurrent' stops the gradient of r_{t-1} inside W_h r_{t-1}
        (e-prop's cut; the leak path stays); 'window' detaches the state every `window` steps (tBPTT).
        stepwise_readout applies the readout inside the time loop: the same values, and a graph whose
        double backward (Hessian-vector products) is ~3x cheaper; one readout of all steps trains faster."""
        r, y = self._loop(x, truncation, window, noise, stepwise_readout)
        return (y if stepwise_readout else self.readout(r)), r

    def rates(self, x: torch.Tensor, *, truncation: str = "none", window: int = 0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
        """Rates r of shape (B, T, N)."""
        return self._loop(x, truncation, window, noise, False)[0]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """The exact noiseless network's readout (B, T, N_out) for evaluation: no graph, no (B, T, N) rate
        tensor, states updated in place, and the readout computed only at `steps` (time indices; None: all),
        zero elsewhere. The same operations as forward() in the same order, so the same values."""
        batch, length = x.shape[0], x.shape[1]
        alpha, f = self.alpha, self.f
        w_t = self.recurrent_weight().T
        keep = range(length) if steps is None else [int(t) for t in steps]
        wanted = set(keep)
        drive = F.linear(x, self.W_x, self.b)
        h = x.new_zeros(batch, self.hidden_size)
        r, u, kept = h, torch.empty_like(h), []
        for t, drive_t in enumerate(drive.unbind(1)):
            torch.addmm(drive_t, r, w_t, out=u)
            if alpha == 1.0:
                h = u.clone()
            else:  # (1 - alpha) h + alpha u, each product rounded as in forward()
                h.mul_(1.0 - alpha).add_(u.mul_(alpha))
            r = f(h)
            if t in wanted:
                kept.append(r)
        y = x.new_zeros(batch, length, self.output_size)
        if kept:
            y[:, list(keep)] = self.readout(torch.stack(kept, dim=1))
        return y

    def _loop(self, x, truncation, window, noise, stepwise_readout):
        if truncation not in TRUNCATIONS:
            raise ValueError(f"unknown truncation '{truncation}'; choose one of: {', '.join(TRUNCATIONS)}")
        batch = x.shape[0]
        alpha = self.alpha
        w_h = self.recurrent_weight()
        # The input drive of every step at once: one large matmul instead of T small ones. unbind (not
        # drive[:, t]) so that backward assembles the drive's gradient once instead of once per step.
        drive = F.linear(x, self.W_x, self.b)
        if noise is not None:
            drive = drive + (self.noise_std / math.sqrt(alpha)) * noise
        h = x.new_zeros(batch, self.hidden_size)
        r = h
        rates, outputs = [], []
        for t, drive_t in enumerate(drive.unbind(1)):
            if truncation == "window" and window > 0 and t > 0 and t % window == 0:
                h, r = h.detach(), r.detach()
            r_in = r.detach() if truncation == "recurrent" else r
            u = drive_t + r_in @ w_h.T
            h = u if alpha == 1.0 else (1.0 - alpha) * h + alpha * u
            r = self.f(h)
            rates.append(r)
            if stepwise_readout:
                outputs.append(self.readout(r))
        return torch.stack(rates, dim=1), (torch.stack(outputs, dim=1) if stepwise_readout else None)
