"""Conformance: the checks every rule must pass before a study spends an hour on it (`python study.py`).

Each check runs on tiny float64 networks (N = 6 units, T = 6 steps, 4 trials) in seconds and compares the
rule's estimate with an independent reference: the exact forward pass and BPTT's gradient (rule=bptt, itself
checked against finite differences in tests/test_bptt_fd.py).

     1  forward loss is the exact objective   Estimate.loss and y_hat equal the exact network's (all 3 networks)
     2  finite                                surrogate and every parameter's estimate finite (all 3 networks)
     3  depends on W_h                        the W_h estimate (no L2 term) is not zero, and changes when W_h does
     4  same seed, same estimate              two identical calls, and a second instance built from the same
                                              seed, give the same estimate (stochastic rules: the same keyed draw)
     5  resume                                an instance restored from a state_dict taken mid-run gives the
                                              estimate the original gives at the next step
     6  DDP average                           2 gloo processes, each on half the batch, averaging their estimates
                                              (as DDP averages gradients) equal one process on the whole batch
                                              (stochastic rules: each rank draws its own, so only finiteness)
     7  readout exact                         W_out and b_out get BPTT's gradient (1e-9)
     8  alignment with BPTT                   rho, cos and |g_hat|/|g| of the W_h estimate on 3 networks: reported
     9  exact = True                          the rule declares it: every estimate equals BPTT's to 1e-9
    10  unbiased = True                       the rule declares it: the mean of K keyed draws meets the exact
                                              gradient within its sampling error (chi^2 of the z-scores)
    11  a rule that learns: local, finite     a rule with parameters returns its own objective (aux_loss); its
                                              gradient is finite, not zero, and reaches no network parameter;
                                              the network's estimate reaches no rule parameter (all 3 networks)

Checks 4-6 include a learning rule's update of its own parameters (as `aux.<name>` entries of the estimate).

A check that cannot run (the rule raises) fails with the exception's first line. The verdicts are data
(`CheckResult`); study.py prints them as a table and stops with exit 1 on a failure.
"""
from __future__ import annotations

import inspect
import math
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import RULES, build_rule
from modules.rules.base import StochasticRule

N_IN, N, N_OUT, B, T = 3, 6, 2, 4, 6
PARAMS = ("W_h", "W_x", "b", "W_out", "b_out")
RULE_SEED = 0
# (activation, alpha, dale, loss, l2): three kinds of network the rules meet in the study
NETWORKS = (("tanh", 0.5, False, "ce", 0.01), ("relu", 0.2, True, "ce", 0.0), ("softplus", 1.0, False, "mse", 0.1))
EXACT_ATOL = 1e-9
UNBIASED_K = 2000


@dataclass
class CheckResult:
    number: int
    name: str
    outcome: str  # "pass" | "FAIL" | "reported" | "n/a" | "skipped"
    detail: str

    @property
    def failed(self) -> bool:
        return self.outcome == "FAIL"


CHECKS = {1: "forward loss is the exact objective", 2: "finite", 3: "depends on W_h",
          4: "same seed, same estimate", 5: "resume (state_dict round trip)", 6: "DDP average (2 gloo processes)",
          7: "readout gets its exact gradient", 8: "alignment with BPTT", 9: "exact = True: equals BPTT",
          10: "unbiased = True: mean of K draws", 11: "a rule that learns: aux update local, finite"}


# ------------------------------------------------------------------------------------ tiny problems
def tiny_net(index: int = 0) -> RateRNN:
    activation, alpha, dale, _, _ = NETWORKS[index]
    torch.manual_seed(100 + index)
    net = RateRNN(N_IN, N, N_OUT, alpha=alpha, activation=activation, dale=dale, noise_std=0.1).double()
    with torch.no_grad():  # weights large enough that the recurrence matters (W_h's credit is not negligible)
        if not dale:
            net.W_h.normal_(0.0, 1.5 / math.sqrt(N))
        net.W_x.normal_(0.0, 1.0)
        net.b.uniform_(-0.2, 0.6)
        net.W_out.normal_(0.0, 1.0 / math.sqrt(N))
        net.b_out.normal_(0.0, 0.5)
    return net


def tiny_problem(index: int = 0):
    """(net, batch, objective, noise) for network `index`; every trial carries loss on its last two steps
    (the same trial structure in every trial, as in a task, so that half batches average to the whole)."""
    net = tiny_net(index)
    loss, l2 = NETWORKS[index][3], NETWORKS[index][4]
    g = torch.Generator().manual_seed(200 + index)
    x = torch.randn(B, T, N_IN, generator=g, dtype=torch.float64)
    y = (torch.randint(N_OUT, (B, T), generator=g) if loss == "ce"
         else torch.randn(B, T, N_OUT, generator=g, dtype=torch.float64))
    mask = torch.zeros(B, T, dtype=torch.float64)
    mask[:, -2:] = 1.0
    noise = torch.randn(B, T, N, generator=g, dtype=torch.float64)
    return net, (x, y, mask), Objective(loss, l2), noise


def params_of(net) -> list[torch.Tensor]:
    return [getattr(net, k) for k in PARAMS]


def grads_of(surrogate: torch.Tensor, net) -> dict[str, torch.Tensor]:
    """d(surrogate)/d(parameter) for every parameter; a parameter the surrogate does not reach gets zeros."""
    got = torch.autograd.grad(surrogate, params_of(net), allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(p)).detach()
            for k, p, g in zip(PARAMS, params_of(net), got)}


def estimate(rule, net, batch, objective, noise, step: int | None = None) -> dict[str, torch.Tensor]:
    """The rule's estimate for every parameter; `step` announces a training step first (on_step). A rule
    that learns adds its own parameters' update as `aux.<name>` (from surrogate + aux_loss, as in training)."""
    if step is not None:
        rule.on_step(step)
    est = rule.surrogate(net, batch, objective, noise=noise)
    own = dict(rule.named_parameters())
    if not own:
        return grads_of(est.surrogate, net)
    total = est.surrogate + est.aux_loss
    got = torch.autograd.grad(total, params_of(net) + list(own.values()), allow_unused=True)
    names = list(PARAMS) + [f"aux.{k}" for k in own]
    values = params_of(net) + list(own.values())
    return {k: (g if g is not None else torch.zeros_like(p)).detach() for k, p, g in zip(names, values, got)}


def exact_gradient(net, batch, objective, noise) -> dict[str, torch.Tensor]:
    return estimate(build_rule("bptt", net), net, batch, objective, noise)


def make_rule(name: str, params: dict, net, seed: int = RULE_SEED):
    """The rule as a run builds it: after seeding the global RNG (a rule draws its state from it)."""
    torch.manual_seed(seed)
    return build_rule(name, net, **params)


def flat(g: dict[str, torch.Tensor], keys=None) -> torch.Tensor:
    """Every entry of g (or those in `keys`), flattened and concatenated."""
    return torch.cat([g[k].flatten() for k in (keys or g)])


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def largest_difference(a: dict, b: dict) -> str:
    k = max(a, key=lambda k: float((a[k] - b[k]).abs().max()))
    return f"{k} differs by {float((a[k] - b[k]).abs().max()):.2e}"


# ------------------------------------------------------------------------------------------ checks
def check_forward(name, params):
    for i in range(len(NETWORKS)):
        net, batch, objective, noise = tiny_problem(i)
        est = make_rule(name, params, net).surrogate(net, batch, objective, noise=noise)
        y_hat, _ = net(batch[0], noise=noise)
        loss = objective(y_hat, batch[1], batch[2], [net.W_x, net.W_h, net.W_out])
        off = abs(float(est.loss.detach()) - float(loss.detach()))
        if not off <= 1e-10 * (1 + abs(float(loss.detach()))):
            return False, f"network {i + 1}: Estimate.loss {float(est.loss.detach()):.6g} != exact objective {float(loss.detach()):.6g}"
        if est.y_hat.shape != y_hat.shape or not torch.allclose(est.y_hat, y_hat, rtol=1e-10, atol=1e-12):
            return False, f"network {i + 1}: Estimate.y_hat is not the exact network's readout"
    return True, f"equal to 1e-10 on {len(NETWORKS)} networks (noise on)"


def check_finite(name, params):
    for i in range(len(NETWORKS)):
        net, batch, objective, noise = tiny_problem(i)
        est = make_rule(name, params, net).surrogate(net, batch, objective, noise=noise)
        if not torch.isfinite(est.surrogate).all():
            return False, f"network {i + 1}: the surrogate is {float(est.surrogate.detach())}"
        g = grads_of(est.surrogate, net)
        bad = [k for k, v in g.items() if not torch.isfinite(v).all()]
        if bad:
            return False, f"network {i + 1}: the estimate of {', '.join(bad)} is not finite"
    return True, f"{len(NETWORKS)} networks"


def check_depends_on_w_h(name, params):
    # without the L2 term: its gradient l2 * W_h alone would make any rule look as if it credited W_h
    net, batch, objective, noise = tiny_problem(0)
    objective = Objective(objective.loss, 0.0)
    g = estimate(make_rule(name, params, net), net, batch, objective, noise, step=0)["W_h"]
    exact = exact_gradient(net, batch, objective, noise)["W_h"]
    if float(g.norm()) <= 1e-8 * float(exact.norm()):
        return False, f"the W_h estimate is zero (‖ĝ‖ = {float(g.norm()):.1e}, ‖g‖ = {float(exact.norm()):.1e})"
    with torch.no_grad():
        net.W_h.add_(0.2 * torch.randn(N, N, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    moved = estimate(make_rule(name, params, net), net, batch, objective, noise, step=0)["W_h"]
    change = float((moved - g).norm())
    if change <= 1e-8 * float(g.norm()):
        return False, "the W_h estimate does not change when W_h changes"
    return True, f"‖ĝ_Wh‖ = {float(g.norm()):.3g}; moves by {change / float(g.norm()):.2g} (relative) when W_h moves"


def check_same_seed(name, params):
    net, batch, objective, noise = tiny_problem(0)
    rule = make_rule(name, params, net)
    a = estimate(rule, net, batch, objective, noise, step=5)
    b = estimate(rule, net, batch, objective, noise, step=5)
    if not same(a, b):
        return False, f"two identical calls (step 5) differ: {largest_difference(a, b)}"
    m1 = estimate(rule, net, batch, objective, noise)
    m2 = estimate(rule, net, batch, objective, noise)
    if not same(m1, m2):
        return False, f"two identical measurement calls differ: {largest_difference(m1, m2)}"
    c = estimate(make_rule(name, params, net), net, batch, objective, noise, step=5)
    if not same(a, c):
        return False, f"a second instance from the same seed differs: {largest_difference(a, c)}"
    stochastic = isinstance(rule, StochasticRule)
    other = estimate(rule, net, batch, objective, noise, step=6)
    note = "; step 6 draws anew" if stochastic and not same(a, other) else ""
    return True, "bitwise equal (training calls, measurement calls, a second instance)" + note


def check_resume(name, params):
    net, batch, objective, noise = tiny_problem(0)
    rule = make_rule(name, params, net)
    for step in (0, 1):
        estimate(rule, net, batch, objective, noise, step=step)
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in rule.state_dict().items()}
    want = estimate(rule, net, batch, objective, noise, step=2)
    resumed = make_rule(name, params, net, seed=RULE_SEED + 1)  # another seed: only the state can restore it
    resumed.load_state_dict(state)
    got = estimate(resumed, net, batch, objective, noise, step=2)
    if not same(want, got):
        return False, f"the restored rule's estimate at step 2 differs: {largest_difference(want, got)}"
    return True, f"bitwise equal after load_state_dict ({len(state)} state entries)"


def check_readout(name, params):
    for i in range(len(NETWORKS)):
        net, batch, objective, noise = tiny_problem(i)
        g = estimate(make_rule(name, params, net), net, batch, objective, noise, step=0)
        exact = exact_gradient(net, batch, objective, noise)
        for k in ("W_out", "b_out"):
            if not torch.allclose(g[k], exact[k], rtol=0, atol=EXACT_ATOL):
                return False, (f"network {i + 1}: {k} differs from its exact gradient by "
                               f"{float((g[k] - exact[k]).abs().max()):.2e}")
    return True, f"W_out, b_out equal to {EXACT_ATOL:g} on {len(NETWORKS)} networks"


def alignment(name, params) -> list[tuple[float, float, float]]:
    """(rho, cos, |g_hat|/|g|) of the W_h estimate on each network."""
    out = []
    for i in range(len(NETWORKS)):
        net, batch, objective, noise = tiny_problem(i)
        g_hat = estimate(make_rule(name, params, net), net, batch, objective, noise, step=0)["W_h"].flatten()
        g = exact_gradient(net, batch, objective, noise)["W_h"].flatten()
        gg = float(g @ g)
        out.append((float(g_hat @ g) / gg, float(g_hat @ g) / math.sqrt(gg * float(g_hat @ g_hat) or 1.0),
                    float(g_hat.norm() / g.norm())))
    return out


def check_alignment(name, params):
    rows = alignment(name, params)
    text = "; ".join(f"net {i + 1}: rho {r:.3f}, cos {c:.3f}, ‖ĝ‖/‖g‖ {n:.3f}" for i, (r, c, n) in enumerate(rows))
    return None, text


def check_exact(name, params, rule_cls):
    if not getattr(rule_cls, "exact", False):
        return "n/a", "the rule does not declare exact = True"
    for i in range(len(NETWORKS)):
        net, batch, objective, noise = tiny_problem(i)
        g = estimate(make_rule(name, params, net), net, batch, objective, noise, step=0)
        exact = exact_gradient(net, batch, objective, noise)
        for k in PARAMS:
            if not torch.allclose(g[k], exact[k], rtol=0, atol=EXACT_ATOL):
                return False, f"network {i + 1}: {k} differs from BPTT by {float((g[k] - exact[k]).abs().max()):.2e}"
    return True, f"every parameter equal to BPTT's to {EXACT_ATOL:g} (float64, {len(NETWORKS)} networks)"


def unbiased_statistics(samples: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """z-scores of the mean of K estimates (K, D) against the exact gradient (D), coordinates with sampling
    variance only; chi2 = their mean square (~1 when unbiased, ~1 + K bias^2 / var when not); `fixed`: the
    largest error of a coordinate that never varies (it must then be exact)."""
    k = samples.shape[0]
    var = samples.var(0)
    varies = var > 1e-24 * (1 + exact.abs().max()) ** 2
    z = (samples.mean(0)[varies] - exact[varies]) / (var[varies] / k).sqrt()
    fixed = (samples[0][~varies] - exact[~varies]).abs()
    return {"chi2": float(z.pow(2).mean()) if z.numel() else 0.0, "z_max": float(z.abs().max()) if z.numel() else 0.0,
            "fixed": float(fixed.max()) if fixed.numel() else 0.0, "d": int(varies.sum())}


def check_unbiased(name, params, rule_cls, k: int = UNBIASED_K):
    if not getattr(rule_cls, "unbiased", False):
        return "n/a", "the rule does not declare unbiased = True"
    net, batch, objective, noise = tiny_problem(0)
    exact = flat(exact_gradient(net, batch, objective, noise), PARAMS)
    rule = make_rule(name, params, net)
    samples = torch.stack([flat(estimate(rule, net, batch, objective, noise, step=s), PARAMS) for s in range(k)])
    s = unbiased_statistics(samples, exact)
    text = (f"K = {k}: mean square z = {s['chi2']:.2f} over {s['d']} varying coordinates (pass < 2.5), "
            f"largest z-score {s['z_max']:.2f} (pass < 5), fixed coordinates off by {s['fixed']:.1e}")
    return s["chi2"] < 2.5 and s["z_max"] < 5 and s["fixed"] <= EXACT_ATOL, text


def check_learning(name, params):
    """A rule that learns: its aux objective trains only its own parameters, the surrogate only the network's."""
    net, _, _, _ = tiny_problem(0)
    if not list(make_rule(name, params, net).parameters()):
        return "n/a", "the rule owns no parameters"
    for i in range(len(NETWORKS)):
        net, batch, objective, noise = tiny_problem(i)
        rule = make_rule(name, params, net)
        rule.on_step(0)
        est = rule.surrogate(net, batch, objective, noise=noise)
        own = list(rule.parameters())
        if est.aux_loss is None or est.aux_loss.dim() != 0:
            return False, f"network {i + 1}: the rule owns parameters but returns no scalar aux_loss"
        if not torch.isfinite(est.aux_loss):
            return False, f"network {i + 1}: aux_loss is {float(est.aux_loss)}"
        into_net = torch.autograd.grad(est.aux_loss, params_of(net), allow_unused=True, retain_graph=True)
        leaks = [k for k, g in zip(PARAMS, into_net) if g is not None and bool(g.abs().max() > 0)]
        if leaks:
            return False, f"network {i + 1}: the rule's own objective reaches the network's {', '.join(leaks)}"
        into_rule = torch.autograd.grad(est.surrogate, own, allow_unused=True, retain_graph=True)
        if any(g is not None and bool(g.abs().max() > 0) for g in into_rule):
            return False, f"network {i + 1}: the network's estimate reaches the rule's own parameters"
        aux = torch.autograd.grad(est.aux_loss, own, allow_unused=True)
        aux = [g for g in aux if g is not None]
        if not aux or not all(torch.isfinite(g).all() for g in aux):
            return False, f"network {i + 1}: the rule's own update is missing or not finite"
        if not any(bool(g.abs().max() > 0) for g in aux):
            return False, f"network {i + 1}: the rule's own update is zero"
    n = sum(p.numel() for p in make_rule(name, params, net).parameters())
    return True, f"{n} own parameters; aux update finite, nonzero and local on {len(NETWORKS)} networks"


# ----------------------------------------------------------------------------------------------- DDP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, name: str, params: dict, rule_file: str, port: int, folder: str) -> None:
    """One of 2 gloo processes: the rule on this rank's half of the batch, estimates averaged across ranks
    with all_reduce exactly as DDP averages gradients; rank 0 saves the average."""
    import sys
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    torch.set_num_threads(1)
    import torch.distributed as dist
    import modules.rules as registry
    if name not in registry.RULES and rule_file:  # a rule file outside modules/rules/ (tests, docs/examples)
        import importlib.util
        spec = importlib.util.spec_from_file_location(f"conformance_rule_{name}", rule_file)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        net, (x, y, mask), objective, noise = tiny_problem(0)
        half = slice(rank * B // 2, (rank + 1) * B // 2)
        rule = make_rule(name, params, net)
        g = estimate(rule, net, (x[half], y[half], mask[half]), objective, noise[half], step=0)
        flat_g = flat(g)
        dist.all_reduce(flat_g)
        if rank == 0:
            torch.save(flat_g / 2, os.path.join(folder, "average.pt"))
    finally:
        dist.destroy_process_group()


def rule_file_of(rule_cls) -> str:
    """The file that defines the rule (a worker process imports it when the registry does not know it)."""
    try:
        return inspect.getfile(rule_cls)
    except TypeError:  # loaded from a path without a sys.modules entry: its methods still know their file
        return rule_cls.surrogate.__code__.co_filename


def check_ddp(name, params, rule_cls):
    net, batch, objective, noise = tiny_problem(0)
    rule = make_rule(name, params, net)
    whole = flat(estimate(rule, net, batch, objective, noise, step=0))
    rule_file = rule_file_of(rule_cls)
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.start_processes(ddp_worker, args=(name, params, rule_file, free_port(), folder),
                                              nprocs=2, start_method="spawn")
        average = torch.load(os.path.join(folder, "average.pt"))
    if isinstance(rule, StochasticRule):
        ok = bool(torch.isfinite(average).all())
        return ok, ("a stochastic rule: each rank draws its own, so the average is not the one-process estimate; "
                    + ("it is finite" if ok else "it is NOT finite"))
    off = float((average - whole).abs().max())
    if not torch.allclose(average, whole, rtol=1e-9, atol=1e-12):
        return False, f"the 2-process average differs from the whole-batch estimate by {off:.2e}"
    return True, f"2-process average equals the whole-batch estimate (largest difference {off:.1e})"


# -------------------------------------------------------------------------------------------- driver
def run_checks(name: str, params: dict | None = None, ddp: bool = True) -> list[CheckResult]:
    """Every check for the registered rule `name` built with `params` (its conf/rule keys), in order."""
    params = dict(params or {})
    rule_cls = RULES[name]
    torch.set_num_threads(1)
    plan = [(1, lambda: check_forward(name, params)), (2, lambda: check_finite(name, params)),
            (3, lambda: check_depends_on_w_h(name, params)), (4, lambda: check_same_seed(name, params)),
            (5, lambda: check_resume(name, params)),
            (6, (lambda: check_ddp(name, params, rule_cls)) if ddp else None),
            (7, lambda: check_readout(name, params)), (8, lambda: check_alignment(name, params)),
            (9, lambda: check_exact(name, params, rule_cls)), (10, lambda: check_unbiased(name, params, rule_cls)),
            (11, lambda: check_learning(name, params))]
    results = []
    for number, run in plan:
        if run is None:
            results.append(CheckResult(number, CHECKS[number], "skipped", "not asked for"))
            continue
        if number == 6 and any(r.failed for r in results):  # the slowest check: not for a rule already refused
            results.append(CheckResult(number, CHECKS[number], "skipped", "an earlier check failed"))
            continue
        try:
            passed, detail = run()
        except Exception as err:  # noqa: BLE001 - a rule that raises fails the check, in one line
            text = str(err).strip().splitlines()[0] if str(err).strip() else ""
            passed, detail = False, f"raised {type(err).__name__}" + (f": {text}" if text else "")
        outcome = {True: "pass", False: "FAIL", None: "reported"}.get(passed, passed)
        results.append(CheckResult(number, CHECKS[number], outcome, detail))
    return results


def table(results: list[CheckResult]) -> str:
    """The results as a markdown table (check | outcome | detail)."""
    lines = ["| # | check | outcome | detail |", "|---|---|---|---|"]
    lines += [f"| {r.number} | {r.name} | {r.outcome} | {r.detail.replace('|', '/')} |" for r in results]
    return "\n".join(lines)
