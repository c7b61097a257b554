"""The learning rate's stability bound at initialisation (docs/study/design-pattern.md, "The shared lr").

For each seed: lambda_max of the Hessian of the training loss (whole training set) at initialisation,
w.r.t. all parameters (Lanczos on Hessian-vector products), w.r.t. W_h alone (what curvature.params=recurrent
measures), and of the readout block in closed form (2 / (n T N_out) R^T R with R = [r, 1] the rates of every
trial and step, for MSE); then the largest lr of a grid with lr * lambda_max(all) < 2 on every seed.

    python tools/init_curvature.py --seeds 100,101,102,103,104 --grid 0.3,0.2,0.1,0.05,0.03 task=pattern model.hidden_size=64
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datamodules import build_datamodule  # noqa: E402
from modules.lanczos import lanczos  # noqa: E402
from rulescape.run.training import build_module, group_params  # noqa: E402

TASK_ONLY = ("name", "alpha", "study", "rule_lr", "dale", "hidden_size")


def top_eigenvalue(loss_fn, params) -> float:
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    sizes = [p.numel() for p in params]

    def hvp(v):
        parts = [c.view_as(p) for c, p in zip(torch.split(v, sizes), params)]
        hv = torch.autograd.grad(grads, params, grad_outputs=parts, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])

    v0 = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0), dtype=params[0].dtype)
    return float(lanczos(hvp, v0, k=1, tol=1e-4, max_iter=100).eigenvalues[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="100,101,102,103,104")
    ap.add_argument("--grid", default="0.3,0.2,0.1,0.05,0.03")
    args, overrides = ap.parse_known_args()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        base = compose("config", overrides=["logger=none", *overrides])
    torch.set_num_threads(1)
    worst = 0.0
    print("seed lambda_max(all) lambda_max(W_h) lambda_max(readout block)")
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = base.copy()
        cfg.seed = seed
        pl.seed_everything(seed, verbose=False)
        dm = build_datamodule(cfg.task.name, **group_params(cfg.task, *TASK_ONLY))
        dm.setup()
        module = build_module(cfg, dm)
        net, objective = module.net, module.objective
        x, y, mask = dm.train_set.x, dm.train_set.y, dm.train_set.mask
        loss_fn = lambda: objective(net(x)[0], y, mask, [net.W_x, net.W_h, net.W_out])  # noqa: E731
        every = [p for p in net.parameters() if p.requires_grad]
        lam_all, lam_wh = top_eigenvalue(loss_fn, every), top_eigenvalue(loss_fn, [net.W_h])
        with torch.no_grad():
            r = net.rates(x).double()
        rows = torch.cat([r.reshape(-1, r.shape[-1]), torch.ones(r.shape[0] * r.shape[1], 1, dtype=r.dtype)], 1)
        lam_readout = float(torch.linalg.eigvalsh(2 * rows.T @ rows / rows.shape[0] / net.output_size)[-1])
        worst = max(worst, lam_all)
        print(f"{seed} {lam_all:.4g} {lam_wh:.4g} {lam_readout:.4g}", flush=True)
    ok = [lr for lr in (float(v) for v in args.grid.split(",")) if lr * worst < 2]
    print(f"max lambda_max(all) = {worst:.4g}; GD's bound 2 / lambda = {2 / worst:.4g}; "
          f"largest grid lr below it: {max(ok) if ok else None}")


if __name__ == "__main__":
    main()
