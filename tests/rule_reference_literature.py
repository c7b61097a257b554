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


def presynaptic(fw: dict, x: np.ndarray) -> np.ndarray:
    """z_t = [r_{t-1}, x_t, 1] (B, T, N + N_in + 1)."""
    B, T, N = fw["r"].shape
    r_prev = np.concatenate([np.zeros((B, 1, N)), fw["r"][:, :-1]], axis=1)
    return np.concatenate([r_prev, x, np.ones((B, T, 1))], axis=-1)


def kf_rtrl_estimates(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float, signs: np.ndarray,
                      eps: float = 1e-7) -> np.ndarray:
    """KF-RTRL written out trial by trial and step by step, one estimate per trial (B, N, N + N_in + 1), for the
    effective W_h, W_x and b stacked per unit, given signs (B, T, 2):
        JA = (1 - a) A + a W_h diag(psi_{t-1}) A
        rho0 = sqrt((|JA| + eps) / (|u| + eps)),  rho1 = sqrt((|a I| + eps) / (|z_t| + eps))
        u <- c1 rho0 u + c2 rho1 z_t,  A <- c1 JA / rho0 + c2 a I / rho1,  estimate += outer(A^T c_t, u)
    with c_t = psi_t W_out^T delta_t."""
    B, T, N = fw["r"].shape
    z = presynaptic(fw, x)
    out = np.zeros((B, N, z.shape[-1]))
    for b in range(B):
        u = np.zeros(z.shape[-1])
        A = np.zeros((N, N))
        for t in range(T):
            JA = (1.0 - alpha) * A + alpha * p["W_h"] @ np.diag(fw["psi"][b, t - 1]) @ A if t > 0 else A
            rho0 = np.sqrt((np.linalg.norm(JA) + eps) / (np.linalg.norm(u) + eps))
            rho1 = np.sqrt((np.linalg.norm(alpha * np.eye(N)) + eps) / (np.linalg.norm(z[b, t]) + eps))
            c1, c2 = signs[b, t]
            u = c1 * rho0 * u + c2 * rho1 * z[b, t]
            A = c1 * JA / rho0 + c2 * alpha * np.eye(N) / rho1
            c = fw["psi"][b, t] * (delta[b, t] @ p["W_out"])
            out[b] += np.outer(A.T @ c, u)
    return out


def kernl_estimates(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float, beta: np.ndarray,
                    lam: np.ndarray) -> np.ndarray:
    """KeRNL with explicit eligibility traces, summed over trials (N, N + N_in + 1):
        eps_t[p, q] = lam_p eps_{t-1}[p, q] + a z_{t,q},   grad[p, q] += sum_k c_{t,k} beta[k, p] eps_t[p, q]
    with c_t = psi_t W_out^T delta_t."""
    B, T, N = fw["r"].shape
    z = presynaptic(fw, x)
    out = np.zeros((N, z.shape[-1]))
    for b in range(B):
        eps = np.zeros((N, z.shape[-1]))
        for t in range(T):
            eps = lam[:, None] * eps + alpha * z[b, t][None, :]
            c = fw["psi"][b, t] * (delta[b, t] @ p["W_out"])
            for pp in range(N):
                out[pp] += sum(c[k] * beta[k, pp] for k in range(N)) * eps[pp]
    return out


def kernl_objective(p: dict, x: np.ndarray, alpha: float, activation: str, xi: np.ndarray, sigma: float,
                    beta: np.ndarray, lam: np.ndarray, drive_noise=None) -> float:
    """1 / (2 sigma^2 B T) sum_{b,t} |h~_t - h_t - beta zeta_t|^2, h~ the forward pass with sigma xi_t added to
    every unit's input, zeta_t = lam zeta_{t-1} + a sigma xi_t."""
    clean = ref.forward(p, x, alpha, activation, drive_noise)["h"]
    both = sigma * xi if drive_noise is None else drive_noise + sigma * xi
    perturbed = ref.forward(p, x, alpha, activation, both)["h"]
    B, T, N = xi.shape
    total = 0.0
    for b in range(B):
        zeta = np.zeros(N)
        for t in range(T):
            zeta = lam * zeta + alpha * sigma * xi[b, t]
            total += ((perturbed[b, t] - clean[b, t] - beta @ zeta) ** 2).sum()
    return total / (2.0 * sigma ** 2 * B * T)


def dni_gradients(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float, window: int, code: np.ndarray,
                  A: np.ndarray, C: np.ndarray, c: np.ndarray) -> tuple[dict, dict]:
    """DNI by an explicit backward recursion. Cuts: s = t - 1 for t = window, 2 window, ... < T. With
    gh_t = dL/dh_t as the rule sees it (B trials, code (B, T, N_out) the module's target input):
        carried_t = (1 - a) gh_{t+1} + a psi_t W_h^T gh_{t+1}        (what step t+1 sends back into h_t)
        gh_t = psi_t W_out^T delta_t + (sg_t / B if t is a cut else carried_t),   sg_t = A h_t + C code_t + c
        target_t = B carried_t at a cut;  own update of aux = 1/(2B) sum |sg_t - target_t|^2:
        dA = sum (sg - target) h_t^T / B,  dC = sum (sg - target) code_t^T / B,  dc = sum (sg - target) / B
    Returns ({W_h, W_x, b} for the effective weights, {sg_state, sg_target, sg_bias})."""
    B, T, N = fw["r"].shape
    cuts = {t - 1 for t in range(window, T, window)}
    gh_next = np.zeros((B, N))
    gu = np.zeros((B, T, N))
    own = {"sg_state": np.zeros_like(A), "sg_target": np.zeros_like(C), "sg_bias": np.zeros_like(c)}
    for t in reversed(range(T)):
        carried = (1.0 - alpha) * gh_next + alpha * fw["psi"][:, t] * (gh_next @ p["W_h"]) if t + 1 < T else 0 * gh_next
        immediate = fw["psi"][:, t] * (delta[:, t] @ p["W_out"])
        if t in cuts:
            sg = fw["h"][:, t] @ A.T + code[:, t] @ C.T + c
            gh = immediate + sg / B
            err = sg - B * carried
            own["sg_state"] += err.T @ fw["h"][:, t] / B
            own["sg_target"] += err.T @ code[:, t] / B
            own["sg_bias"] += err.sum(0) / B
        else:
            gh = immediate + carried
        gu[:, t] = alpha * gh
        gh_next = gh
    r_prev = np.concatenate([np.zeros((B, 1, N)), fw["r"][:, :-1]], axis=1)
    g = {"W_h": np.einsum("btp,btq->pq", gu, r_prev), "W_x": np.einsum("btp,btq->pq", gu, x), "b": gu.sum((0, 1))}
    return g, own


def modprop_estimates(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float, mu: float,
                      w_bar: np.ndarray) -> np.ndarray:
    """ModProp by its filter taps, summed over trials (N, N + N_in + 1):
        gh_t = sum_{s >= 0} (K^T)^s (psi_{t+s} W_out^T delta_{t+s}),   K = (1 - a) I + a mu W_bar (zero diagonal)
        grad[p, q] = a sum_t gh_{t,p} z_{t,q}"""
    B, T, N = fw["r"].shape
    z = presynaptic(fw, x)
    K = (1.0 - alpha) * np.eye(N) + alpha * mu * w_bar * (1.0 - np.eye(N))
    out = np.zeros((N, z.shape[-1]))
    for b in range(B):
        for t in range(T):
            gh = np.zeros(N)
            tap = np.eye(N)
            for s in range(T - t):
                gh += tap @ (fw["psi"][b, t + s] * (delta[b, t + s] @ p["W_out"]))
                tap = tap @ K.T
            out += alpha * np.outer(gh, z[b, t])
    return out
