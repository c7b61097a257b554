"""Lanczos with full reorthogonalisation: the largest algebraic eigenvalues of a symmetric operator.

Given only v -> A v on flat vectors of length n, build the Krylov basis Q_j = [q_0 .. q_{j-1}] and the
tridiagonal T_j = Q_j^T A Q_j (diagonal alphas, off-diagonal betas). The eigenvalues of T_j (Ritz values)
approach A's extreme eigenvalues fast (far faster than power iteration when the top gap is small). Every
new vector is orthogonalised against the whole basis, twice ("twice is enough"), so no ghost copies of
converged eigenvalues appear. The residual of Ritz pair (theta_i, y_i = Q_j s_i) is exact and free:

    || A y_i - theta_i y_i || = beta_j * |s_i[-1]|

and some eigenvalue of A lies within that residual of theta_i. We stop when the top-k residuals are all
<= tol * max|theta| (relative to the spectral scale), when the Krylov space is invariant, or at max_iter.

Limitation of any single-vector Krylov method: an exactly repeated eigenvalue is found once.
Works on any device; the tiny tridiagonal eigenproblem is solved on the CPU in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class LanczosResult:
    eigenvalues: torch.Tensor   # (k,) float64 on CPU, descending (largest algebraic first)
    residuals: torch.Tensor     # (k,) the residual norms ||A y - theta y|| of those Ritz pairs
    iterations: int             # matrix-vector products used
    converged: bool


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, k: int = 1,
            tol: float = 1e-4, max_iter: int = 100) -> LanczosResult:
    """The k largest algebraic eigenvalues of the symmetric operator `matvec` (flat (n,) -> (n,)),
    from the Krylov space of `start` (n,), which sets the device and dtype of the iteration."""
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
    result = None
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
        alphas.append(float(alpha))

        theta, s = torch.linalg.eigh(tridiagonal(alphas, betas))
        top = torch.arange(len(alphas) - 1, max(len(alphas) - 1 - k, -1), -1)  # indices of the largest
        residuals = beta * s[-1, top].abs()
        scale = float(theta.abs().max())
        converged = len(top) == k and bool((residuals <= tol * scale).all())
        result = LanczosResult(theta[top], residuals, j + 1, converged)
        # an invariant Krylov space: the Ritz values are exact eigenvalues (to rounding)
        invariant = beta <= 1e-12 * max(scale, torch.finfo(start.dtype).tiny)
        if converged or invariant:
            result.converged = len(top) == k
            break
        betas.append(beta)
        q = w / beta
    return result


def tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    """The symmetric tridiagonal matrix (m, m), float64, with diagonal alphas (m) and off-diagonal betas (m-1)."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[:len(alphas) - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return t
