"""The Hessian of the training objective (data loss + L2 regulariser, the exact untruncated network) w.r.t.
a chosen set of parameters, as an operator v -> H v, and the curvature quantities built on it.

Hessian-vector products are reverse-over-reverse with torch.func: the objective is a function of the chosen
parameters (functional_call on the network, every other parameter held fixed), `torch.func.grad` gives its
gradient function, and `torch.func.vjp` of that gradient function linearises it once at the current
weights. Each H v is then one call of the stored vjp_fn (H is symmetric, so v^T H = (H v)^T): no forward
pass and no first backward pass are repeated. For W_h alone (params="recurrent", the study's choice) the
same products are written out by hand instead (modules/recurrent_hessian.py, equal to these to rounding;
tests/test_curvature.py). Nothing here touches `.grad`, train/eval mode or the global RNG: randomness comes
from the torch.Generator the caller passes.

Parameter sets: "recurrent" = W_h only (the study's choice); "all" = every trainable parameter of the
network (W_x, W_h, b, W_out, b_out). Flat vectors concatenate the chosen parameters in that order, each
flattened row-major (W_h[p, q] is entry p * N + q).

Quantities:
    top_eigenvalues    the k largest algebraic eigenvalues of H (Lanczos; or pyhessian's power iteration)
    hutchinson_trace   tr(H) ~ mean_v v^T H v over Rademacher probes v (exact when the probes are a basis)
    relative_flatness  Petzka et al. (2021) on W_h: kappa = sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}), w_s the
                       rows of W_h (incoming weights of unit s), H_{s,s'} the (N x N) block of H_{W_h}
                       between rows s and s'. kappa = tr(H A) with A v = vec(W_h W_h^T V) for V = v as
                       an N x N matrix, estimated as mean_v <H v, A v> over Rademacher probes (unbiased;
                       exact when the probes are the standard basis).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable

import torch
from torch import nn
from torch.func import functional_call, grad, vjp, vmap

from modules import recurrent_hessian
from modules.lanczos import LanczosResult, lanczos
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules.base import Batch, Rule, prepare_batch

PARAM_SETS = ("recurrent", "all")


def parameter_names(net: nn.Module, params: str) -> list[str]:
    """Names of the parameters the Hessian is taken with respect to, in flat-vector order."""
    if params == "recurrent":
        return ["W_h"]
    if params == "all":
        return [name for name, p in net.named_parameters() if p.requires_grad]
    raise ValueError(f"unknown parameter set '{params}'; choose one of: {', '.join(PARAM_SETS)}")


class _ObjectiveOf(nn.Module):
    """The training objective of `net` on a fixed batch, as a module with no inputs, so that
    functional_call swaps the network's parameters everywhere the objective reads them (the readout,
    and the L2 regulariser's list of weights in Rule.objective_of)."""

    def __init__(self, net: RateRNN, objective: Objective, batch: Batch):
        super().__init__()
        self.net, self.objective, self.batch = net, objective, batch

    def forward(self) -> torch.Tensor:
        y_hat, _ = self.net(self.batch[0], stepwise_readout=True)  # exact network: no truncation, no noise
        return Rule.objective_of(self.net, y_hat, self.batch, self.objective)


HVP_METHODS = ("auto", "analytic", "autograd")


class HessianOperator:
    """H = d^2 objective / d theta^2 at the network's current weights, theta = the chosen parameters.

    method "auto" (default): the hand-written products of modules/recurrent_hessian.py for W_h alone (the
    study's curvature; 15-24% faster products, up to 46% faster linearisation: bench.py), torch.func's
    reverse-over-reverse otherwise; "analytic" / "autograd" force one (tests compare them).

    matvec(v): v flat (dim,) -> H v flat (dim,), on the parameters' device and dtype; matmat(V): rows
    (m, dim) -> (m, dim), the m products in one vmapped call (one pass through the linearised graph with a
    batch of cotangents instead of m Python-level passes). The weights are read (detached) when the
    operator is built; later changes to the network are not seen. `products` counts Hessian-vector
    products (a matmat of m rows counts m), the deterministic measure of cost.
    """

    def __init__(self, net: RateRNN, objective: Objective, batch: Batch, params: str = "recurrent",
                 method: str = "auto"):
        if method not in HVP_METHODS:
            raise ValueError(f"unknown Hessian-vector method '{method}'; choose one of: {', '.join(HVP_METHODS)}")
        self.names = parameter_names(net, params)
        batch = prepare_batch(batch, net)
        self.products = 0
        self._analytic = None
        analytic_ok = (params == "recurrent" and type(objective) is Objective
                       and recurrent_hessian.supported(net, objective))
        if method == "analytic" and not analytic_ok:
            raise ValueError("method='analytic' covers params='recurrent' with relu/tanh/softplus and a "
                             "ce/mse Objective")
        if method != "autograd" and analytic_ok:
            self._analytic = recurrent_hessian.RecurrentHessian(net, objective, batch)
            self.shapes, self.dim = [net.W_h.shape], net.W_h.numel()
            self.dtype, self.device = net.W_h.dtype, net.W_h.device
            self.gradient = self._analytic.gradient.reshape(-1)
            return
        module = _ObjectiveOf(net, objective, batch)
        # copies: the linearisation keeps these tensors, and an in-place change of the network's weights
        # (an optimizer step, load_state_dict) must not reach an operator already built
        fixed = {f"net.{name}": p.detach().clone() for name, p in net.named_parameters()}
        primals = {name: fixed[f"net.{name}"] for name in self.names}
        self.shapes = [p.shape for p in primals.values()]
        self.dim = sum(p.numel() for p in primals.values())
        self.dtype, self.device = net.W_h.dtype, net.W_h.device

        def loss(chosen: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(module, fixed | {f"net.{n}": t for n, t in chosen.items()}, ())

        # linearise the gradient function once; every HVP reuses vjp_fn (no forward pass repeated)
        gradient, self._vjp_fn = vjp(grad(loss), primals)
        self.gradient = self.flatten(gradient)

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: t[0] for name, t in self._unflatten_rows(v[None]).items()}

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        if self._analytic is not None:
            return self.matmat(v[None])[0]
        self.products += 1
        (hv,) = self._vjp_fn(self.unflatten(v))
        return self.flatten(hv)

    def matmat(self, vs: torch.Tensor) -> torch.Tensor:
        """H applied to each row of vs (m, dim), vmapped over the stored vjp (falls back to a loop)."""
        self.products += vs.shape[0]
        if self._analytic is not None:
            return self._analytic.matmat(vs.reshape(vs.shape[0], *self.shapes[0])).reshape(vs.shape[0], -1)
        try:
            (hv,) = vmap(self._vjp_fn)(self._unflatten_rows(vs))
        except RuntimeError:  # an op without a batching rule: the same products one by one
            self.products -= vs.shape[0]
            return torch.stack([self.matvec(v) for v in vs])
        return torch.cat([hv[n].reshape(vs.shape[0], -1) for n in self.names], dim=1)

    def _unflatten_rows(self, vs: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            out[name] = vs[:, start:start + size].reshape(vs.shape[0], *shape)
            start += size
        return out


def random_start(dim: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """A Gaussian start vector drawn on the CPU (identical on every device) and moved."""
    return torch.randn(dim, generator=generator, dtype=torch.float64).to(device, dtype)


def rademacher(dim: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """A vector of independent +-1 entries, drawn on the CPU and moved."""
    return (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(device, dtype)


WARM_MIX = 1e-2  # weight of a fresh random direction added to a warm start (see warm_start)


def warm_start(previous: torch.Tensor, generator: torch.Generator, dtype, device) -> torch.Tensor:
    """A start vector from the previous measurement's unit Ritz vectors (k, dim): their sum plus WARM_MIX
    times a seeded random unit vector, so that no direction is missing from the Krylov space even if the
    old vectors were exactly orthogonal to a new top eigenvector."""
    previous = previous.to(device, dtype)
    fresh = random_start(previous.shape[1], generator, dtype, device)
    start = previous.sum(0)
    return start / start.norm() + WARM_MIX * fresh / fresh.norm()


def lanczos_eigenvalues(op: HessianOperator, k: int = 1, tol: float = 1e-4, max_iter: int = 100,
                        seed: int = 0, previous: torch.Tensor | None = None,
                        vectors: bool = False) -> LanczosResult:
    """The k largest algebraic eigenvalues of op's Hessian by Lanczos, each to relative accuracy tol,
    from a seeded random start, or warm-started from `previous` unit Ritz vectors (k', dim) of an earlier
    measurement. vectors=True also returns the Ritz vectors (to warm-start the next one)."""
    generator = torch.Generator().manual_seed(seed)
    if previous is not None and previous.shape[-1] == op.dim:
        start = warm_start(previous, generator, op.dtype, op.device)
    else:
        start = random_start(op.dim, generator, op.dtype, op.device)
    return lanczos(op.matvec, start, k=k, tol=tol, max_iter=max_iter, vectors=vectors)


def _probe_batches(probes: Iterable[torch.Tensor], chunk: int):
    batch = []
    for v in probes:
        batch.append(v)
        if len(batch) == chunk:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


PROBE_CHUNK = 32  # probes per vmapped call (memory: chunk x the linearised graph's activations)


def hutchinson_trace(op: HessianOperator, probes: Iterable[torch.Tensor]) -> float:
    """mean over probes of v^T H v: tr(H) in expectation for Rademacher probes, exactly for a basis.
    The products are taken PROBE_CHUNK at a time in one vmapped call."""
    total, count = 0.0, 0
    for vs in _probe_batches(probes, PROBE_CHUNK):
        total += float((vs * op.matmat(vs)).sum())
        count += vs.shape[0]
    return total / count


def relative_flatness(op: HessianOperator, w_h: torch.Tensor, probes: Iterable[torch.Tensor]) -> float:
    """kappa = sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}) for an operator on W_h alone (op.names == ["W_h"]),
    estimated as the mean over probes of <H v, A v> with A v = W_h W_h^T V (see the module docstring):
    Rademacher probes give an unbiased estimate, basis_probes the exact value. Products vmapped in chunks."""
    if op.names != ["W_h"]:
        raise ValueError("relative flatness needs the Hessian w.r.t. W_h alone (params='recurrent')")
    gram = w_h.detach() @ w_h.detach().T  # <w_s, w_s'>, (N, N)
    total, count = 0.0, 0
    for vs in _probe_batches(probes, PROBE_CHUNK):
        m = vs.shape[0]
        hv = op.matmat(vs).view(m, *gram.shape)
        total += float((hv * (gram @ vs.view(m, *gram.shape))).sum())
        count += m
    return total / count


def rademacher_probes(op: HessianOperator, samples: int, generator: torch.Generator):
    """`samples` Rademacher vectors for op, drawn lazily from `generator`."""
    for _ in range(samples):
        yield rademacher(op.dim, generator, op.dtype, op.device)


def basis_probes(op: HessianOperator):
    """The standard basis scaled by sqrt(dim): the probe mean then equals the exact trace (test use)."""
    scale = float(op.dim) ** 0.5
    for i in range(op.dim):
        e = torch.zeros(op.dim, dtype=op.dtype, device=op.device)
        e[i] = scale
        yield e


def pyhessian_eigenvalues(net: RateRNN, objective: Objective, batch: Batch, params: str = "recurrent",
                          k: int = 1, tol: float = 1e-4, max_iter: int = 100, seed: int = 0) -> list[float]:
    """Cross-check backend: pyhessian's power iteration with deflation (top_n=k). Note it returns the k
    eigenvalues of largest *magnitude*, its tol is the relative change between two iterates (looser than
    a residual), and each eigenvalue may take up to max_iter HVPs.

    pyhessian differentiates `model.parameters()` with loss.backward(create_graph=True), sets the model to
    eval mode and draws its vectors from the global RNG. So it gets a throwaway module whose only
    parameters are *copies* of the chosen weights (the network's .grad and mode are never touched) and a
    forked, seeded global CPU RNG (restored afterwards)."""
    from pyhessian import hessian as PyHessian

    names = parameter_names(net, params)
    batch = prepare_batch(batch, net)
    objective_of = _ObjectiveOf(net, objective, batch)
    fixed = {f"net.{name}": p.detach() for name, p in net.named_parameters()}

    class Chosen(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = nn.ParameterDict({n: nn.Parameter(fixed[f"net.{n}"].clone()) for n in names})

        def forward(self, _inputs):
            chosen = {f"net.{n}": p for n, p in self.weights.items()}
            return functional_call(objective_of, fixed | chosen, ())

    class Placeholder:  # pyhessian moves its (inputs, targets) with .cuda(); ours live inside the closure
        def cuda(self):
            return self

    model = Chosen()
    device = net.W_h.device
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=fork_devices):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        torch.set_default_dtype(net.W_h.dtype)  # pyhessian draws with torch.randn(size): match our dtype
        try:
            with torch.cuda.device(device) if device.type == "cuda" else nullcontext():
                solver = PyHessian(model, lambda loss, _targets: loss, data=(Placeholder(), Placeholder()),
                                   cuda=device.type == "cuda")
                values, _ = solver.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        finally:
            torch.set_default_dtype(default_dtype)
            for p in model.parameters():  # backward(create_graph=True) left a graph in .grad: free it
                p.grad = None
    return [float(v) for v in values]


def top_eigenvalues(net: RateRNN, objective: Objective, batch: Batch, params: str = "recurrent", k: int = 1,
                    tol: float = 1e-4, max_iter: int = 100, seed: int = 0, backend: str = "lanczos") -> list[float]:
    """The k leading Hessian eigenvalues of the training objective on `batch`.
    backend "lanczos": the largest algebraic, descending (Lanczos + torch.func HVPs);
    "pyhessian": the largest in magnitude, in the order its deflated power iteration finds them.
    Entries that did not appear (a Krylov space smaller than k) are NaN."""
    if backend == "pyhessian":
        values = pyhessian_eigenvalues(net, objective, batch, params, k, tol, max_iter, seed)
    elif backend == "lanczos":
        op = HessianOperator(net, objective, batch, params)
        values = lanczos_eigenvalues(op, k, tol, max_iter, seed).eigenvalues.tolist()
    else:
        raise ValueError(f"unknown curvature backend '{backend}'; choose one of: lanczos, pyhessian")
    return values + [float("nan")] * (k - len(values))
