"""Curvature: the leading eigenvalue(s) of the Hessian of the training objective (data loss + L2) at the
weights after step k, on a fixed curvature batch, with the exact noiseless network (modules/hessian.py).

Keys: curvature/lambda_max (and curvature/lambda_2 .. lambda_k when k > 1); with `trace`:
curvature/trace (Hutchinson, trace_samples Rademacher probes); with `flatness`: curvature/rel_flatness
(Petzka et al. 2021 on W_h, Hutchinson estimate with trace_samples probes, see modules/hessian.py) and
curvature/lambda_wnorm = lambda_max * ||W_h||_F^2 (scale-independent sharpness).

The curvature batch is the first `batch_size` trials of a seeded permutation of the training set
(datamodule.curvature_batch(batch_size, seed)), re-derived identically after a resume. Lanczos stops when
each eigenvalue is within `tol` relative (modules/lanczos.py). With `warm_start` (default) each Lanczos
run starts from the previous measurement's top-k Ritz vectors (plus a small seeded random direction),
which cuts the Hessian-vector products per measurement; those vectors are callback state, saved in the
checkpoint, so a measurement is a pure function of the weights and the checkpointed state and a resumed
run equals an uninterrupted one. The first measurement (and every one with warm_start=false) starts from
a random vector seeded with the run's seed; probes come from seeded generators. `product_counts` keeps
[step, Hessian-vector products] of each Lanczos measurement (checkpointed; for inspection). Nothing here changes
training: no .grad, no mode switch, no global RNG.

`at_steps_from=<glob>` adds the steps at which the named runs stopped (their records' `steps`, read when the
run is built, waiting `at_steps_wait_s` for them): a rule's run then holds λ1 at exactly the step where its
seed's BPTT run stopped, so "λ1 at equal steps" compares equal steps. A glob that names no directory (a run
outside a study sweep, or a sweep without a BPTT arm) adds nothing, with one warning line.
"""
from __future__ import annotations

import logging

import torch

from callbacks.history import HistoryCallback
from modules.lanczos import NonFiniteOperator
from modules.run_records import stop_steps
from modules.hessian import (HessianOperator, PARAM_SETS, lanczos_eigenvalues, pyhessian_eigenvalues,
                             rademacher_probes, relative_flatness, hutchinson_trace)

log = logging.getLogger("rulescape")
BACKENDS = ("lanczos", "pyhessian")


class Curvature(HistoryCallback):
    phase = "after"

    def __init__(self, every_n_steps: int = 500, params: str = "recurrent", k: int = 1,
                 backend: str = "lanczos", batch_size: int = 256, tol: float = 1e-4, max_iter: int = 100,
                 trace: bool = False, trace_samples: int = 20, flatness: bool = False, seed: int = 0,
                 warm_start: bool = True, at_steps=()):
        super().__init__()
        if params not in PARAM_SETS:
            raise ValueError(f"curvature.params={params!r}; choose one of: {', '.join(PARAM_SETS)}")
        if backend not in BACKENDS:
            raise ValueError(f"curvature.backend={backend!r}; choose one of: {', '.join(BACKENDS)}")
        if not (tol > 0 and int(max_iter) >= int(k) >= 1 and int(trace_samples) >= 1):
            raise ValueError(f"curvature: need tol > 0, max_iter >= k >= 1, trace_samples >= 1 (got tol={tol}, "
                             f"max_iter={max_iter}, k={k}, trace_samples={trace_samples})")
        self.every_n_steps, self.params, self.k, self.backend = int(every_n_steps), params, int(k), backend
        self.batch_size, self.tol, self.max_iter = int(batch_size), float(tol), int(max_iter)
        self.trace, self.trace_samples, self.flatness = bool(trace), int(trace_samples), bool(flatness)
        self.seed, self.warm_start = int(seed), bool(warm_start)
        self.at_steps = frozenset(int(s) for s in at_steps)  # measured there too (other runs' stop steps)
        self._batch = None
        self.ritz = None                      # (k, dim) unit Ritz vectors of the last measurement, on the CPU
        self.product_counts: list[list[int]] = []

    @classmethod
    def from_config(cls, cfg) -> "Curvature":
        c = cfg.curvature
        return cls(every_n_steps=c.every_n_steps, params=c.params, k=c.k, backend=c.backend,
                   batch_size=c.batch_size, tol=c.tol, max_iter=c.max_iter, trace=c.trace,
                   trace_samples=c.trace_samples, flatness=c.flatness, seed=cfg.seed,
                   warm_start=c.get("warm_start", True), at_steps=cls.steps_from(c))

    @staticmethod
    def steps_from(c) -> list[int]:
        """The stop steps of the runs curvature.at_steps_from names ([] when unset)."""
        pattern = c.get("at_steps_from")
        if not pattern:
            return []
        steps = stop_steps(pattern, "curvature.at_steps_from", c.get("at_steps_wait_s") or 0.0)
        if not steps:
            log.warning("curvature.at_steps_from=%s names no run directory: λ1 at this run's own steps only", pattern)
        return steps

    def due(self, step: int, max_steps: int) -> bool:
        return super().due(step, max_steps) or (step in self.at_steps and step not in self.measured_steps)

    def curvature_batch(self, trainer):
        """The fixed curvature batch (drawn once; the datamodule's draw is seeded, so a resume gets the same)."""
        if self._batch is None:
            self._batch = trainer.datamodule.curvature_batch(self.batch_size, self.seed)
        return self._batch

    def measure(self, trainer, pl_module, batch=None) -> dict[str, float]:
        net, objective = pl_module.net, pl_module.objective
        data = self.curvature_batch(trainer)
        op = None
        if self.backend == "lanczos":
            op = HessianOperator(net, objective, data, self.params)
            previous = self.ritz if self.warm_start else None
            try:
                result = lanczos_eigenvalues(op, self.k, self.tol, self.max_iter, seed=self.seed,
                                             previous=previous, vectors=self.warm_start)
            except NonFiniteOperator:
                # the weights after this step overflow the loss: the run diverged here (the loss check of the
                # next step would say so; this measurement comes first)
                from modules.lit_module import Diverged  # local: callbacks know no module at import time
                raise Diverged(int(trainer.global_step), "the Hessian-vector product on the curvature batch") from None
            if self.warm_start:
                self.ritz = result.vectors.detach().cpu()
            self.product_counts.append([int(trainer.global_step), result.iterations])
            if not result.converged:
                log.warning("curvature at step %d: Lanczos stopped at max_iter=%d before tol=%g (error bounds %s)",
                            trainer.global_step, self.max_iter, self.tol, result.errors.tolist())
            values = result.eigenvalues.tolist()
        else:
            values = pyhessian_eigenvalues(net, objective, data, self.params, self.k, self.tol,
                                           self.max_iter, seed=self.seed)
        values += [float("nan")] * (self.k - len(values))
        out = {"curvature/lambda_max": values[0]}
        out |= {f"curvature/lambda_{i + 1}": v for i, v in enumerate(values[1:], start=1)}

        if self.trace:
            op = op or HessianOperator(net, objective, data, self.params)
            probes = rademacher_probes(op, self.trace_samples, torch.Generator().manual_seed(self.seed + 1))
            out["curvature/trace"] = hutchinson_trace(op, probes)
        if self.flatness:
            op_h = op if self.params == "recurrent" and op is not None else \
                HessianOperator(net, objective, data, "recurrent")
            probes = rademacher_probes(op_h, self.trace_samples, torch.Generator().manual_seed(self.seed + 2))
            out["curvature/rel_flatness"] = relative_flatness(op_h, net.W_h, probes)
            out["curvature/lambda_wnorm"] = values[0] * float(net.W_h.detach().pow(2).sum())
        return out

    def state_dict(self) -> dict:
        return super().state_dict() | {"ritz": self.ritz, "product_counts": self.product_counts}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.ritz = state_dict.get("ritz")
        self.product_counts = [list(p) for p in state_dict.get("product_counts", [])]
