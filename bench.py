"""Speed of rulescape on this machine, as ratios measured in one process (so a noisy machine matters less).

    python bench.py              # the full table (a few minutes on a 2-core CPU)
    python bench.py --tiny       # seconds; what the test suite runs so this file cannot rot
    python bench.py --json out.json

On a machine with CUDA everything (runs, baseline, eigenvalues) goes to the GPU, timed with synchronisation.

Measures, for the default dms and seqmnist sizes:
  1. ms per training step of each rule through the LightningModule (Trainer loop included) vs a plain
     hand-written PyTorch BPTT loop on the same network and batches (target: <= 1.3x);
  2. ms per lambda_1 evaluation of the default curvature backend vs PyHessian, both checked against a
     converged Lanczos reference to 1e-4 relative (target: >= 5x faster);
  3. the default measurement cadence as a fraction of a default run's time (target: <= 25%);
  4. wall time of the default `python train.py rule=rflo task=dms`, and runs per hour of a 2-job sweep.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from callbacks.alignment import gradients  # noqa: E402
from callbacks.generalization import Generalization  # noqa: E402
from modules.hessian import top_eigenvalues  # noqa: E402
from modules.objective import Objective  # noqa: E402
from rulescape.quiet import quiet_third_party  # noqa: E402
from rulescape.run import build_module, group_params  # noqa: E402
from datamodules import build_datamodule  # noqa: E402

RULES = ["bptt", "eprop", "rflo", "mdgl", "tbptt", "bptt_scaled"]
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
TRAINER = ["trainer=gpu"] if CUDA else []  # runs go where the benchmark's baseline goes


def now() -> float:
    """Wall clock after all queued GPU work has finished (CUDA kernels run asynchronously)."""
    if CUDA:
        torch.cuda.synchronize()
    return time.perf_counter()
RULE_ARGS = {"bptt_scaled": ["rule.rho=0.5"]}


def config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def setup(overrides: list[str]):
    cfg = config(TRAINER + overrides)
    pl.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg.task.name, **group_params(cfg.task, "name", "alpha"))
    dm.setup()
    return cfg, dm, build_module(cfg, dm)


class StepTimer(pl.Callback):
    """Wall time from the start of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = now()


def lightning_step_ms(overrides: list[str], steps: int, warmup: int) -> float:
    cfg, dm, module = setup(overrides + [f"trainer.max_steps={steps + warmup}"])
    timer = StepTimer(warmup)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, max_steps=steps + warmup, max_epochs=-1,
                         callbacks=[timer], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    return 1000 * (timer.end - timer.start) / steps


def plain_step_ms(overrides: list[str], steps: int, warmup: int) -> float:
    """The floor: a hand-written PyTorch BPTT loop, same network, optimizer and batch size."""
    cfg, dm, module = setup(overrides)
    net, train = module.net.to(DEVICE), dm.train_set.to(DEVICE)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.get("momentum", 0.0))
    g = torch.Generator().manual_seed(0)
    batches = [train.batch(torch.randint(len(train), (dm.batch_size,), generator=g)) for _ in range(steps + warmup)]
    loss_fn = Objective(dm.loss)
    for i, (x, y, mask) in enumerate(batches):
        if i == warmup:
            start = now()
        opt.zero_grad()
        y_hat, _ = net(x)
        loss = loss_fn.data_loss(y_hat, y, mask)
        loss.backward()
        opt.step()
    return 1000 * (now() - start) / steps


def train_step_table(task: str, steps: int, warmup: int, repeats: int, extra: list[str]) -> list[dict]:
    """Median over repeats, rules and the baseline interleaved so that drift hits all alike."""
    base = [f"task={task}", "logger=none", *extra]
    times: dict[str, list[float]] = {"plain": [], **{r: [] for r in RULES}}
    for _ in range(repeats):
        times["plain"].append(plain_step_ms(base, steps, warmup))
        for rule in RULES:
            times[rule].append(lightning_step_ms(base + [f"rule={rule}", *RULE_ARGS.get(rule, [])], steps, warmup))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return [{"task": task, "what": k, "ms_per_step": med[k], "ratio_vs_plain": med[k] / med["plain"]} for k in med]


def time_call(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = now()
        out = fn()
        best = min(best, now() - start)
    return 1000 * best, out


def curvature_table(task: str, repeats: int, train_steps: int, extra: list[str]) -> dict:
    """lambda_1 at the default curvature setting, on a network trained for a few steps (curvature at
    initialisation is atypically flat). Both backends must land within 1e-4 of a converged reference."""
    cfg, dm, module = setup([f"task={task}", "logger=none", f"trainer.max_steps={max(train_steps, 1)}", *extra])
    if train_steps:
        trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, max_steps=train_steps, max_epochs=-1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             use_distributed_sampler=False)
        trainer.fit(module, datamodule=dm)
    net, objective = module.net.to(DEVICE), module.objective  # fit() hands the module back on the CPU
    batch = dm.curvature_batch(cfg.curvature.batch_size, cfg.seed)
    c = cfg.curvature
    reference = top_eigenvalues(net, objective, batch, c.params, k=1, tol=1e-10, max_iter=300)[0]
    ms_lanczos, lam_l = time_call(lambda: top_eigenvalues(net, objective, batch, c.params, 1, c.tol, c.max_iter)[0],
                                  repeats)
    ms_pyh, lam_p = time_call(lambda: top_eigenvalues(net, objective, batch, c.params, 1, 1e-6, 1000,
                                                      backend="pyhessian")[0], repeats)
    rel = lambda v: abs(v - reference) / abs(reference)  # noqa: E731
    # top-3: where Lanczos's one Krylov space beats deflated power iteration (one run per eigenvalue)
    ref3 = top_eigenvalues(net, objective, batch, c.params, k=3, tol=1e-10, max_iter=300)
    ms_l3, top_l = time_call(lambda: top_eigenvalues(net, objective, batch, c.params, 3, c.tol, c.max_iter), repeats)
    ms_p3, top_p = time_call(lambda: top_eigenvalues(net, objective, batch, c.params, 3, 1e-6, 1000,
                                                     backend="pyhessian"), repeats)
    rel3 = lambda vs: max(abs(v - r) / abs(r) for v, r in zip(sorted(vs, reverse=True), ref3))  # noqa: E731
    return {"task": task, "lambda_ref": reference, "lanczos_ms": ms_lanczos, "lanczos_rel_err": rel(lam_l),
            "pyhessian_ms": ms_pyh, "pyhessian_rel_err": rel(lam_p), "speedup": ms_pyh / ms_lanczos,
            "top3_lanczos_ms": ms_l3, "top3_lanczos_rel_err": rel3(top_l), "top3_pyhessian_ms": ms_p3,
            "top3_pyhessian_rel_err": rel3(top_p), "top3_speedup": ms_p3 / ms_l3}


def cadence_table(task: str, step_ms: float, repeats: int, extra: list[str]) -> dict:
    """Cost of the default measurements over a default run, from their measured unit costs."""
    cfg, dm, module = setup([f"task={task}", "logger=none", *extra])
    net, objective = module.net.to(DEVICE), module.objective
    gen = Generalization(cfg.eval_every)

    class Fake:  # what the callbacks read from a trainer
        datamodule = dm
    ms_eval, _ = time_call(lambda: gen.measure(Fake, module), repeats)
    batch = dm.curvature_batch(cfg.curvature.batch_size, cfg.seed)
    c = cfg.curvature
    ms_curv, _ = time_call(lambda: top_eigenvalues(net, objective, batch, c.params, c.k, c.tol, c.max_iter), repeats)
    train_batch = dm.train_set.batch(slice(0, dm.batch_size))
    ms_align, _ = time_call(lambda: gradients(module, train_batch), repeats)
    steps = cfg.trainer.max_steps
    n_eval = steps // cfg.eval_every + 1 if cfg.eval_every else 2
    n_curv = steps // c.every_n_steps + 1 if c.every_n_steps else 2
    n_align = steps // cfg.alignment.every_n_steps if cfg.alignment.every_n_steps else 1
    measure_ms = n_eval * ms_eval + n_curv * ms_curv + n_align * ms_align
    train_ms = steps * step_ms
    return {"task": task, "eval_ms": ms_eval, "n_eval": n_eval, "curvature_ms": ms_curv, "n_curvature": n_curv,
            "alignment_ms": ms_align, "n_alignment": n_align, "measure_s": measure_ms / 1000,
            "train_s": train_ms / 1000, "fraction_of_run": measure_ms / (measure_ms + train_ms)}


def default_run_wall(extra: list[str]) -> dict:
    """The default run as a user starts it, alone and as 2 parallel jobs (a 2-job sweep on 2 cores)."""
    cmd = [sys.executable, "train.py", "rule=rflo", "task=dms", "logger=none", *TRAINER, *extra]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(cmd + [f"hydra.run.dir={tmp}/single"], cwd=ROOT, env=env, check=True, capture_output=True)
        single = time.perf_counter() - start
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd + [f"seed={i}", f"hydra.run.dir={tmp}/pair{i}"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
        if any(p.wait() for p in procs):
            raise RuntimeError("a sweep job failed")
        pair = time.perf_counter() - start
    return {"single_run_s": single, "two_jobs_s": pair, "runs_per_hour_2_jobs": 2 * 3600 / pair}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke version (for the tests)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tasks", nargs="+", default=["dms", "seqmnist"])
    args = parser.parse_args(argv)
    quiet_third_party()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no per-Trainer banners in the table
    torch.set_num_threads(1)  # what a run uses (threads=1): one process per run is fastest here
    steps, warmup, repeats = (5, 2, 1) if args.tiny else (60, 10, 3)
    results = {"machine": machine(), "train_step": [], "curvature": [], "cadence": []}
    for task in args.tasks:
        tiny = ["model.hidden_size=16", "task.train_size=64", "task.batch_size=16"] if args.tiny else []
        rows = train_step_table(task, steps, warmup, repeats, tiny)
        results["train_step"] += rows
        results["curvature"].append(curvature_table(task, repeats, 0 if args.tiny else 200, tiny))
        plain = next(r["ms_per_step"] for r in rows if r["what"] == "plain")
        results["cadence"].append(cadence_table(task, plain, repeats, tiny))
    extra = ["trainer.max_steps=20", "model.hidden_size=16"] if args.tiny else []
    results["default_run"] = default_run_wall(extra)
    results["tiny"] = args.tiny
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def print_tables(results: dict) -> None:
    m = results["machine"]
    smoke = ("SMOKE CHECK (--tiny): toy sizes and a few steps, so that bench.py cannot rot. These figures"
             " (ms, errors, speed-ups, runs/hour) say nothing about speed or accuracy; run `python bench.py`.")
    if results.get("tiny"):
        print(f"\n{smoke}")
    print(f"\nmachine: {m['cpu_count']} CPUs, torch {m['torch']}, {m['threads']} thread(s), cuda: {m['cuda']}")
    print("\n| task | step | ms/step | x plain BPTT |\n|---|---|---:|---:|")
    for r in results["train_step"]:
        print(f"| {r['task']} | {r['what']} | {r['ms_per_step']:.2f} | {r['ratio_vs_plain']:.2f} |")
    print("\n| task | eigenvalues | lambda_1 | lanczos ms (rel err) | pyhessian ms (rel err) | speed-up |"
          "\n|---|---|---:|---:|---:|---:|")
    for r in results["curvature"]:
        print(f"| {r['task']} | top-1 | {r['lambda_ref']:.4g} | {r['lanczos_ms']:.0f} ({r['lanczos_rel_err']:.1e}) | "
              f"{r['pyhessian_ms']:.0f} ({r['pyhessian_rel_err']:.1e}) | {r['speedup']:.1f}x |")
        print(f"| {r['task']} | top-3 | {r['lambda_ref']:.4g} | {r['top3_lanczos_ms']:.0f} "
              f"({r['top3_lanczos_rel_err']:.1e}) | {r['top3_pyhessian_ms']:.0f} ({r['top3_pyhessian_rel_err']:.1e}) | "
              f"{r['top3_speedup']:.1f}x |")
    print("\n| task | eval ms x n | lambda_1 ms x n | alignment ms x n | measurements s | training s | share |"
          "\n|---|---:|---:|---:|---:|---:|---:|")
    for r in results["cadence"]:
        print(f"| {r['task']} | {r['eval_ms']:.0f} x {r['n_eval']} | {r['curvature_ms']:.0f} x {r['n_curvature']} | "
              f"{r['alignment_ms']:.0f} x {r['n_alignment']} | {r['measure_s']:.1f} | {r['train_s']:.1f} | "
              f"{100 * r['fraction_of_run']:.0f}% |")
    d = results["default_run"]
    print(f"\ndefault `python train.py rule=rflo task=dms`: {d['single_run_s']:.1f} s alone; 2 parallel jobs "
          f"{d['two_jobs_s']:.1f} s -> {d['runs_per_hour_2_jobs']:.0f} runs/hour")
    if results.get("tiny"):
        print(f"\n{smoke}")


if __name__ == "__main__":
    main()
