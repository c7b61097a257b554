"""Lanczos with full reorthogonalisation: the largest algebraic eigenvalues of a symmetric operator.

Given only v -> A v on flat vectors of length n, build the Krylov basis Q_j = [q_0 .. q_{j-1}] and the
tridiagonal T_j = Q_j^T A Q_j (diagonal alphas, off-diagonal betas). The eigenvalues of T_j (Ritz values)
approach A's extreme eigenvalues fast (far faster than power iteration when the top gap is small). Every
new vector is orthogonalised against the whole basis, twice ("twice is enough"), so no ghost copies of
converged eigenvalues appear. The residual of Ritz pair (theta_i, y_i = Q_j s_i) is exact and free:

    r_i = || A y_i - theta_i y_i || = beta_j * |s_i[-1]|

Stopping rule: relative eigenvalue accuracy. Two bounds on the error of a Ritz value:
  * |lambda - theta_i| <= r_i for some eigenvalue lambda of A (always true);
  * |lambda - theta_i| <= r_i^2 / gap_i (Kato-Temple), where gap_i is the distance from theta_i to the
    rest of the spectrum. We estimate it from the other Ritz values: gap_i = min_{j != i} |theta_i - theta_j|
    - r_j (each theta_j has an eigenvalue within r_j). This is the standard Ritz-gap estimate; it is exact
    as soon as no eigenvalue of A hides between theta_i and its Ritz neighbours (an eigenvector the start
    vector is orthogonal to), and it is never used when it is not positive.
  err_i = min(r_i, r_i^2 / gap_i); the first is a guarantee, the second holds when the Ritz-gap estimate
  is right. Its failure mode: a pair of eigenvalues closer than about sqrt(tol * |theta| * gap_i) that the
  Krylov space has not split yet (then the true error is at most min(r_i, delta), delta their spacing).
  We stop when err_i <= tol * |theta_i| for the top k, when the Krylov space
  is invariant, or at max_iter. Near convergence r_i falls geometrically, so r^2 / gap reaches a relative
  accuracy of 1e-4 after about half the steps a residual test r <= 1e-4 |theta| would need.
Moreover theta_1 <= lambda_1 (Cauchy interlacing): the top Ritz value approaches lambda_1 from below.

Warm start: any start vector works; the previous measurement's Ritz vector(s) (returned with
`vectors=True`) give a Krylov space that already nearly contains the new top eigenvectors.

Limitation of any single-vector Krylov method: an exactly repeated eigenvalue is found once.
Works on any device; the tiny tridiagonal eigenproblem is solved on the CPU in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class LanczosResult:
    eigenvalues: torch.Tensor   # (k,) float64 on CPU, descending (largest algebraic first)
    residuals: torch.Tensor     # (k,) the residual norms ||A y - theta y|| of those Ritz pairs
    iterations: int             # matrix-vector products used
    converged: bool
    errors: Optional[torch.Tensor] = None   # (k,) the error bounds min(r, r^2 / gap) of the stopping rule
    vectors: Optional[torch.Tensor] = None  # (k, n) unit Ritz vectors (with vectors=True), start's dtype/device


def error_bounds(theta: torch.Tensor, residuals_all: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """min(r_i, r_i^2 / gap_i) for the Ritz values theta[top], gap_i estimated from the other Ritz values
    (minus their residuals); r_i alone where that gap is not positive or there is no other Ritz value."""
    out = residuals_all[top].clone()
    if theta.numel() < 2:
        return out
    for pos, i in enumerate(top.tolist()):
        others = torch.ones_like(theta, dtype=torch.bool)
        others[i] = False
        gap = float(((theta[others] - theta[i]).abs() - residuals_all[others]).min())
        if gap > 0:
            out[pos] = min(float(out[pos]), float(out[pos]) ** 2 / gap)
    return out


class NonFiniteOperator(FloatingPointError):
    """A product of the operator was NaN or infinite (e.g. the Hessian of a network whose loss overflowed)."""


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, k: int = 1,
            tol: float = 1e-4, max_iter: int = 100, vectors: bool = False) -> LanczosResult:
    """The k largest algebraic eigenvalues of the symmetric operator `matvec` (flat (n,) -> (n,)),
    from the Krylov space of `start` (n,), which sets the device and dtype of the iteration; each to a
    relative accuracy tol (see the module docstring). vectors=True also returns the k Ritz vectors."""
    n = start.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the operator's size), got {k}")
    steps = min(int(max_iter), n)
    if steps < k:
        raise ValueError(f"max_iter={max_iter} is smaller than k={k}")
    basis = start.new_zeros(steps, n)
    q = start / start.norm()
    alphas: list[float] = []
    betas: list[float] = []
    result, s, top = None, None, None
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alpha = torch.dot(q, w)
        w = w - alpha * q
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        for _ in range(2):  # full reorthogonalisation, twice
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        beta = float(w.norm())
        if not math.isfinite(beta) or not math.isfinite(float(alpha)):  # eigh would fail on it, unexplained
            raise NonFiniteOperator(f"the operator returned a non-finite product at Lanczos step {j + 1}")
        alphas.append(float(alpha))

        theta, s = torch.linalg.eigh(tridiagonal(alphas, betas))
        top = torch.arange(len(alphas) - 1, max(len(alphas) - 1 - k, -1), -1)  # indices of the largest
        residuals_all = beta * s[-1].abs()
        errors = error_bounds(theta, residuals_all, top)
        converged = len(top) == k and bool((errors <= tol * theta[top].abs()).all())
        result = LanczosResult(theta[top], residuals_all[top], j + 1, converged, errors)
        # an invariant Krylov space: the Ritz values are exact eigenvalues (to rounding)
        scale = float(theta.abs().max())
        invariant = beta <= 1e-12 * max(scale, torch.finfo(start.dtype).tiny)
        if converged or invariant:
            result.converged = len(top) == k
            break
        betas.append(beta)
        q = w / beta
    if vectors:
        m = result.iterations
        ritz = s[:, top].T.to(start.device, start.dtype) @ basis[:m]  # (k', n)
        result.vectors = ritz / ritz.norm(dim=1, keepdim=True)
    return result


def tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    """The symmetric tridiagonal matrix (m, m), float64, with diagonal alphas (m) and off-diagonal betas (m-1)."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[:len(alphas) - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return t
