"""Per-step anatomy of a rule's update: where does a run blow up?  (design-pattern.md, "RFLO's divergence")

Trains one configuration step by step outside Lightning (same batches, same SGD step as train.py) and
prints per step: the loss; |update| of each parameter, the rule's next to the exact gradient's;
cos and rho of the rule's W_h update with the exact W_h gradient; the curvature of the loss along the whole
update, lam_u = u^T H u / |u|^2 (all parameters), and along the readout-only and network-only parts of it;
and the one-dimensional descent condition eta < 2 (g . u) / (u^T H u) (the step along u lowers the loss
to second order only below it). Usage (any train.py overrides):

    python tools/diagnose_update.py task=pattern rule=rflo model.dale=true seed=100 --steps 12
"""
from __future__ import annotations

import argparse
import sys

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datamodules import build_datamodule  # noqa: E402
from datamodules.base import StepBatchSampler  # noqa: E402
from rulescape.run.training import build_module, group_params  # noqa: E402

NAMES = ("W_x", "W_h", "b", "W_out", "b_out")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--every", type=int, default=10, help="print every this many steps (and the first 12)")
    ap.add_argument("--last", type=int, default=0, help="... and each of the last this many steps")
    args, overrides = ap.parse_known_args()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("config", overrides=["logger=none", *overrides])
    torch.set_num_threads(1)
    pl.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg.task.name, **group_params(cfg.task, "name", "alpha", "study", "rule_lr", "dale", "hidden_size"))
    dm.setup()
    module = build_module(cfg, dm)
    net, rule, objective = module.net, module.rule, module.objective
    lr = float(cfg.optimizer.lr)
    params = dict(net.named_parameters())
    names = [n for n in NAMES if n in params]
    sampler = StepBatchSampler(len(dm.train_set), dm.batch_size, args.steps, dm.seed)
    print(f"lr={lr} rule={cfg.rule.name} dale={cfg.model.dale}")
    print("step loss | " + " ".join(f"|u_{n}|/|g_{n}|" for n in names)
          + " | |u|  cos_Wh rho_Wh | lam_u lam_u(net) lam_u(readout) | 2(g.u)/(uHu)")
    for step in range(args.steps):
        show = step < 12 or step % args.every == 0 or step >= args.steps - args.last
        batch = dm.train_set.batch(sampler.global_batch(step))
        rule.on_step(step)
        est = rule.surrogate(net, batch, objective)
        u = torch.autograd.grad(est.surrogate, [params[n] for n in names], allow_unused=True)
        u = [torch.zeros_like(params[n]) if v is None else v for n, v in zip(names, u)]
        if show:
            report(step, net, names, params, objective, batch, u)
        if not torch.isfinite(est.loss):
            break
        with torch.no_grad():
            for n, v in zip(names, u):
                params[n] -= lr * v


def report(step, net, names, params, objective, batch, u) -> None:
    """One line: the update u against the exact gradient g and the Hessian H at the current weights."""
    loss = objective(net(batch[0])[0], batch[1], batch[2], [net.W_x, net.W_h, net.W_out])
    g = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)

    def curvature(vec):
        hv = torch.autograd.grad(g, [params[n] for n in names], grad_outputs=vec, retain_graph=True)
        return sum((h * v).sum() for h, v in zip(hv, vec)).item()

    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    uu, gg = flat(u), flat([t.detach() for t in g])
    readout = [v if n in ("W_out", "b_out") else torch.zeros_like(v) for n, v in zip(names, u)]
    network = [torch.zeros_like(v) if n in ("W_out", "b_out") else v for n, v in zip(names, u)]
    uhu = curvature(u)
    lam = lambda part: curvature(part) / max(flat(part).pow(2).sum().item(), 1e-30)  # noqa: E731
    i = names.index("W_h")
    gh, uh = g[i].detach().reshape(-1), u[i].reshape(-1)
    cos = (gh @ uh / (gh.norm() * uh.norm())).item()
    rho = (gh @ uh / (gh @ gh)).item()
    ratios = " ".join(f"{u[k].norm().item():8.3g}/{g[k].norm().item():<8.3g}" for k in range(len(names)))
    bound = 2 * (gg @ uu).item() / uhu if uhu > 0 else float("inf")
    print(f"{step:4d} {loss.item():8.4g} | {ratios} | {uu.norm().item():7.3g} {cos:6.3f} {rho:6.3f} | "
          f"{uhu / uu.pow(2).sum().item():8.3g} {lam(network):8.3g} {lam(readout):8.3g} | {bound:8.3g}", flush=True)

if __name__ == "__main__":
    main()
