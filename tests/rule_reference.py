"""Plain reference implementations of the learning rules, for tests: numpy float64 loops over time, no
autograd, written from the equations of SPEC section 4 (not from modules/rules).

Network (SPEC section 3; weights post x pre, batch-first):

    h_t = (1 - a) h_{t-1} + a (W_x x_t + W_h r_{t-1} + b + noise_t)      r_t = f(h_t)     y_t = W_out r_t + b_out

`W_h` here is the *effective* recurrent weight (zero diagonal; signed under Dale's law); `param_grads`
maps gradients w.r.t. it back to the stored parameter by the chain rule.

Loss: mean over loss-carrying steps (mask) of CE, or of MSE averaged over outputs, plus l2/2 |W|^2 on the
weight matrices W_x, W_h, W_out (the stored parameters).

Rules, with delta_t = dLoss/dy_t, psi_t = f'(h_t):
    eligibility     eps_t = (1 - a) eps_{t-1} + a pre_t     pre_t = r_{t-1} (W_h), x_t (W_x), 1 (b)
                    e_t = psi_t eps_t                        grad W[p, q] = sum_t L_{p,t} psi_{p,t} eps_{q,t}
    eprop           L_t = W_out^T delta_t
    rflo            L_t = B delta_t
    mdgl            Ltilde_t = L_t + a sum_j Wbar[j, p] psi_{j,t+1} L_{j,t+1}   (L_t of eprop; 0 extra at t = T)
    bptt / tbptt    explicit backward recursion; tbptt cuts the carried gradient at window boundaries
"""
from __future__ import annotations

import numpy as np


def act(name: str, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(h) and f'(h)."""
    if name == "relu":
        return np.maximum(h, 0.0), (h > 0).astype(h.dtype)
    if name == "tanh":
        r = np.tanh(h)
        return r, 1.0 - r ** 2
    if name == "softplus":
        return np.logaddexp(0.0, h), 1.0 / (1.0 + np.exp(-h))
    raise ValueError(name)


def forward(p: dict, x: np.ndarray, alpha: float, activation: str, drive_noise: np.ndarray | None = None) -> dict:
    """p: W_x (N, N_in), W_h effective (N, N), b (N,) or None, W_out (N_out, N), b_out (N_out,).
    x (B, T, N_in); drive_noise (B, T, N) is added to u_t. Returns h, r, psi (B, T, N) and y (B, T, N_out)."""
    B, T, _ = x.shape
    N = p["W_h"].shape[0]
    h = np.zeros((B, T, N))
    r = np.zeros((B, T, N))
    psi = np.zeros((B, T, N))
    h_prev = np.zeros((B, N))
    r_prev = np.zeros((B, N))
    for t in range(T):
        u = x[:, t] @ p["W_x"].T + r_prev @ p["W_h"].T
        if p.get("b") is not None:
            u = u + p["b"]
        if drive_noise is not None:
            u = u + drive_noise[:, t]
        h[:, t] = (1.0 - alpha) * h_prev + alpha * u
        r[:, t], psi[:, t] = act(activation, h[:, t])
        h_prev, r_prev = h[:, t], r[:, t]
    y = r @ p["W_out"].T + p["b_out"]
    return {"h": h, "r": r, "psi": psi, "y": y}


def loss_and_delta(kind: str, y_hat: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Data loss and delta = dLoss/dy_hat (B, T, N_out), derived by hand."""
    m = mask.astype(np.float64)
    count = m.sum()
    if kind == "mse":
        K = y_hat.shape[-1]
        err = y_hat - target
        loss = float((m * (err ** 2).mean(-1)).sum() / count)
        return loss, 2.0 * err / K * m[..., None] / count
    if kind == "ce":
        z = y_hat - y_hat.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        onehot = np.eye(y_hat.shape[-1])[target]
        loss = float(-(m * (onehot * logp).sum(-1)).sum() / count)
        return loss, (np.exp(logp) - onehot) * m[..., None] / count
    raise ValueError(kind)


def traces(pre: np.ndarray, alpha: float) -> np.ndarray:
    """Presynaptic eligibility: eps_t = (1 - a) eps_{t-1} + a pre_t, eps_0 = 0 before the first step. (B, T, M)."""
    eps = np.zeros_like(pre)
    prev = np.zeros_like(pre[:, 0])
    for t in range(pre.shape[1]):
        prev = (1.0 - alpha) * prev + alpha * pre[:, t]
        eps[:, t] = prev
    return eps


def type_average(w: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Each (post type, pre type) block of w replaced by its mean over off-diagonal entries (0 if none)."""
    n = w.shape[0]
    out = np.zeros_like(w)
    for k in np.unique(types):
        for l in np.unique(types):
            vals = [w[i, j] for i in range(n) for j in range(n) if types[i] == k and types[j] == l and i != j]
            mean = sum(vals) / len(vals) if vals else 0.0
            for i in range(n):
                for j in range(n):
                    if types[i] == k and types[j] == l:
                        out[i, j] = mean
    return out


def learning_signal(rule: str, p: dict, fw: dict, delta: np.ndarray, alpha: float, feedback=None,
                    types=None) -> np.ndarray:
    """L_t (B, T, N) of a trace rule."""
    if rule == "rflo":
        return delta @ feedback.T                      # B delta_t, feedback (N, N_out)
    L = delta @ p["W_out"]                             # W_out^T delta_t
    if rule == "eprop":
        return L
    if rule == "mdgl":
        w_bar = type_average(p["W_h"], types)
        a_next = fw["psi"] * L                         # psi_{j,t} L_{j,t}
        extra = np.zeros_like(L)
        B, T, N = L.shape
        for t in range(T - 1):
            for q in range(N):
                extra[:, t, q] = alpha * sum(w_bar[j, q] * a_next[:, t + 1, j] for j in range(N))
        return L + extra
    raise ValueError(rule)


def trace_rule_grads(rule: str, p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float,
                     feedback=None, types=None) -> dict:
    """Estimates for the effective W_h, W_x and b: sum_{batch, t} L_{p,t} psi_{p,t} eps_{q,t}."""
    L = learning_signal(rule, p, fw, delta, alpha, feedback, types)
    B, T, N = fw["r"].shape
    r_prev = np.concatenate([np.zeros((B, 1, N)), fw["r"][:, :-1]], axis=1)
    factor = L * fw["psi"]                             # (B, T, N): learning signal times psi, per postsynaptic unit
    out = {}
    for name, pre in (("W_h", r_prev), ("W_x", x), ("b", np.ones((B, T, 1)))):
        eps = traces(pre, alpha)
        g = np.zeros((N, pre.shape[-1]))
        for t in range(T):
            for bb in range(B):
                g += np.outer(factor[bb, t], eps[bb, t])  # e_{pq,t} = psi_{p,t} eps_{q,t}
        out[name] = g[:, 0] if name == "b" else g
    return out


def bptt_grads(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float, window: int | None = None) -> dict:
    """Exact gradients for the effective W_h, W_x and b by the backward recursion
        dL/dr_t = W_out^T delta_t + a W_h^T dL/dh_{t+1}
        dL/dh_t = psi_t dL/dr_t + (1 - a) dL/dh_{t+1}
    With `window`, the state is detached at steps t with t % window == 0 (t > 0): nothing is carried from
    step t back to t - 1 (truncated BPTT)."""
    B, T, N = fw["r"].shape
    gh_next = np.zeros((B, N))
    gu = np.zeros((B, T, N))
    for t in reversed(range(T)):
        if window is not None and (t + 1) < T and (t + 1) % window == 0:
            gh_next = np.zeros((B, N))
        gr = delta[:, t] @ p["W_out"] + alpha * gh_next @ p["W_h"]
        gh = fw["psi"][:, t] * gr + (1.0 - alpha) * gh_next
        gu[:, t] = alpha * gh
        gh_next = gh
    r_prev = np.concatenate([np.zeros((B, 1, N)), fw["r"][:, :-1]], axis=1)
    return {"W_h": np.einsum("btp,btq->pq", gu, r_prev), "W_x": np.einsum("btp,btq->pq", gu, x),
            "b": gu.sum((0, 1))}


def readout_grads(fw: dict, delta: np.ndarray) -> dict:
    return {"W_out": np.einsum("btk,btn->kn", delta, fw["r"]), "b_out": delta.sum((0, 1))}


def param_grads(grads_eff: dict, w_h_param: np.ndarray, dale_sign: np.ndarray | None) -> dict:
    """Map the effective-W_h gradient to the stored parameter by the chain rule through
    W_eff = |W| * sign_pre * offdiag (Dale's law) or W * offdiag."""
    out = dict(grads_eff)
    g = grads_eff["W_h"] * (1.0 - np.eye(w_h_param.shape[0]))
    if dale_sign is not None:
        g = g * dale_sign[None, :] * np.sign(w_h_param)
    out["W_h"] = g
    return out


def effective_recurrent(w_h_param: np.ndarray, dale_sign: np.ndarray | None) -> np.ndarray:
    w = np.abs(w_h_param) * dale_sign[None, :] if dale_sign is not None else w_h_param.copy()
    return w * (1.0 - np.eye(w.shape[0]))


def rule_gradients(rule: str, params: dict, x, target, mask, *, alpha: float, activation: str, loss: str,
                   l2: float = 0.0, dale_sign=None, drive_noise=None, feedback=None, types=None,
                   window: int | None = None, rho: float = 1.0) -> tuple[float, dict, np.ndarray]:
    """(objective, {param name: update}, y_hat) for `rule`; updates for W_x, W_h, b, W_out, b_out. params hold
    the stored parameters (W_h as stored; Dale's law applied here with dale_sign, +1 E / -1 I per presynaptic
    unit). feedback: RFLO's B (N, N_out); types: MDGL's cell type per unit; window: tbptt; rho: bptt_scaled."""
    p = dict(params)
    p["W_h"] = effective_recurrent(params["W_h"], dale_sign)
    fw = forward(p, x, alpha, activation, drive_noise)
    data_loss, delta = loss_and_delta(loss, fw["y"], target, mask)
    if rule in ("bptt", "tbptt", "bptt_scaled"):
        g = bptt_grads(p, x, fw, delta, alpha, window if rule == "tbptt" else None)
    else:
        g = trace_rule_grads(rule, p, x, fw, delta, alpha, feedback, types)
    if rule == "bptt_scaled":
        g = {k: rho * v for k, v in g.items()}
    g.update(readout_grads(fw, delta))
    out = param_grads(g, params["W_h"], dale_sign)
    # L2 terms: the readout's is exact for every rule; the recurrent and input ones scale like the rule's estimate
    scale = rho if rule == "bptt_scaled" else 1.0
    out["W_x"] = out["W_x"] + scale * l2 * params["W_x"]
    out["W_h"] = out["W_h"] + scale * l2 * params["W_h"]
    out["W_out"] = out["W_out"] + l2 * params["W_out"]
    if params.get("b") is None:
        out.pop("b")
    reg = 0.5 * l2 * sum((params[k] ** 2).sum() for k in ("W_x", "W_h", "W_out"))
    return data_loss + reg, out, fw["y"]


def rtrl_grads(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float) -> dict:
    """Exact gradients for the effective W_h, W_x and b by forward-mode influence (RTRL), one trial and one
    weight at a time:  dh_t/dW[p, q] = (1 - a) dh_{t-1}/dW + a (W_h (psi_{t-1} * dh_{t-1}/dW) + e_p pre_{t,q}),
    grad W[p, q] = sum_{b, t} (W_out^T delta_t * psi_t) . dh_t/dW[p, q]."""
    B, T, N = fw["r"].shape
    r_prev = np.concatenate([np.zeros((B, 1, N)), fw["r"][:, :-1]], axis=1)
    out = {}
    for name, pre in (("W_h", r_prev), ("W_x", x), ("b", np.ones((B, T, 1)))):
        g = np.zeros((N, pre.shape[-1]))
        for bb in range(B):
            for pp in range(N):
                for qq in range(pre.shape[-1]):
                    m = np.zeros(N)                        # dh_t / dW[pp, qq]
                    for t in range(T):
                        carried = p["W_h"] @ (fw["psi"][bb, t - 1] * m) if t > 0 else np.zeros(N)
                        immediate = np.zeros(N)
                        immediate[pp] = pre[bb, t, qq]
                        m = (1.0 - alpha) * m + alpha * (carried + immediate)
                        g[pp, qq] += (delta[bb, t] @ p["W_out"] * fw["psi"][bb, t]) @ m
        out[name] = g[:, 0] if name == "b" else g
    return out


def rtrl_rule_gradients(params: dict, x, target, mask, *, alpha: float, activation: str, loss: str,
                        l2: float = 0.0, dale_sign=None, drive_noise=None) -> tuple[float, dict, np.ndarray]:
    """As rule_gradients, for RTRL (forward-mode influence): (objective, {param name: update}, y_hat)."""
    p = dict(params)
    p["W_h"] = effective_recurrent(params["W_h"], dale_sign)
    fw = forward(p, x, alpha, activation, drive_noise)
    data_loss, delta = loss_and_delta(loss, fw["y"], target, mask)
    g = rtrl_grads(p, x, fw, delta, alpha)
    g.update(readout_grads(fw, delta))
    out = param_grads(g, params["W_h"], dale_sign)
    for k in ("W_x", "W_h", "W_out"):
        out[k] = out[k] + l2 * params[k]
    if params.get("b") is None:
        out.pop("b")
    reg = 0.5 * l2 * sum((params[k] ** 2).sum() for k in ("W_x", "W_h", "W_out"))
    return data_loss + reg, out, fw["y"]


def uoro_estimates(p: dict, x: np.ndarray, fw: dict, delta: np.ndarray, alpha: float, signs: np.ndarray,
                   eps: float = 1e-7) -> np.ndarray:
    """UORO (Tallec & Ollivier 2018) written out step by step for the effective W_h, W_x and b stacked per
    unit as theta (N, N + N_in + 1), one estimate per trial (B, N, N + N_in + 1), for given signs (B, T, N):
        F_t = a nu_t pre_t^T,  rho0 = sqrt((|theta| + eps) / (|J s| + eps)),  rho1 = sqrt((|F_t| + eps) / (|nu| + eps))
        s <- rho0 J s + rho1 nu,  theta <- theta / rho0 + F_t / rho1,  estimate += (c_t . s) theta
    with J s = (1 - a) s + a W_h (psi_{t-1} s) and c_t = psi_t W_out^T delta_t."""
    B, T, N = fw["r"].shape
    r_prev = np.concatenate([np.zeros((B, 1, N)), fw["r"][:, :-1]], axis=1)
    pre = np.concatenate([r_prev, x, np.ones((B, T, 1))], axis=-1)
    out = np.zeros((B, N, pre.shape[-1]))
    for bb in range(B):
        s = np.zeros(N)
        theta = np.zeros((N, pre.shape[-1]))
        for t in range(T):
            nu = signs[bb, t]
            js = (1.0 - alpha) * s + alpha * p["W_h"] @ (fw["psi"][bb, t - 1] * s) if t > 0 else s
            f = alpha * np.outer(nu, pre[bb, t])
            rho0 = np.sqrt((np.linalg.norm(theta) + eps) / (np.linalg.norm(js) + eps))
            rho1 = np.sqrt((np.linalg.norm(f) + eps) / (np.linalg.norm(nu) + eps))
            s = rho0 * js + rho1 * nu
            theta = theta / rho0 + f / rho1
            c = fw["psi"][bb, t] * (delta[bb, t] @ p["W_out"])
            out[bb] += (c @ s) * theta
    return out
