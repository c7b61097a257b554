"""Plain float64 references for the literature's rules (modules/rules/kolen_pollack.py, kf_rtrl.py, kernl.py,
dni.py), for tests: numpy loops over trials and time, written from the equations in those docstrings, not from
the rules' code. Built on tests/rule_reference.py (forward pass, delta, Dale's law, the chain rule)."""
from __future__ import annotations

import numpy as np

import rule_reference as ref


def setup(params: dict, x, target, mask, *, alpha: float, activation: str, loss: str, dale_sign=None,
          drive_noise=None) -> tuple[dict, dict, np.ndarray]:
    """(effective params, forward pass, delta) of the network."""
    p = dict(params)
    p["W_h"] = ref.effective_recurrent(params["W_h"], dale_sign)
    fw = ref.forward(p, x, alpha, activation, drive_noise)
    _, delta = ref.loss_and_delta(loss, fw["y"], target, mask)
    return p, fw, delta


def kolen_pollack_feedback_update(params, x, target, mask, *, alpha, activation, loss, dale_sign, feedback,
                                  decay) -> np.ndarray:
    """dB = G^T + decay B, with G = sum_{b, t} delta_t r_t^T the readout's data gradient (N_out, N)."""
    _, fw, delta = setup(params, x, target, mask, alpha=alpha, activation=activation, loss=loss,
                         dale_sign=dale_sign)
    g = np.zeros((delta.shape[-1], fw["r"].shape[-1]))
    for b in range(delta.shape[0]):
        for t in range(delta.shape[1]):
            g += np.outer(delta[b, t], fw["r"][b, t])
    return g.T + decay * feedback
