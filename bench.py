"""Speed of rulescape on this machine, as ratios measured in one process (so a noisy machine matters less).

    python bench.py              # the full table (a few minutes on a 2-core CPU)
    python bench.py --tiny       # seconds; what the test suite runs so this file cannot rot
    python bench.py --json out.json
    python bench.py --steps-only --tasks dms seqmnist --rules bptt kf_rtrl   # table 1 only, for these rules

On a machine with CUDA everything (runs, baseline, eigenvalues) goes to the GPU, timed with synchronisation.

Measures, for the default dms, seqmnist and pattern sizes:
  1. ms per training step of every registered rule (modules/rules: new rules are timed when they land;
     one that cannot run at the bench size is skipped with the reason printed) through the
     LightningModule (Trainer loop included) vs a plain hand-written PyTorch BPTT loop on the same network
     and batches, median of interleaved repeats (target: <= 1.3x);
  2. lambda_1 along a whole default run: the weights at every curvature measurement point of a default
     run (step 0, every curvature.every_n_steps, the end), measured in order as the callback does (our
     Lanczos, warm-started from the previous point, stopping at curvature.tol) and by PyHessian at the
     loosest tolerance of 1e-4/1e-5/1e-6/1e-7 that brings every point within 1e-4; each value checked against
     a converged cold Lanczos reference (tol 1e-10). Reports total ms, Hessian-vector products (ours
     warm and cold), the worst relative error and the speed-up (target: >= 5x);
  3. top-1 and top-3 at one point (after 200 steps), cold, both backends;
  4. the measurements' share of a real default run (`python train.py task=<task>`, BPTT at the task's default
     cadences), from the seconds each measurement callback spent (summary.json `timing`; target: <= 10%);
  5. wall time of the default `python train.py rule=rflo task=dms`, and runs per hour of a 2-job sweep.
"""
from __future__ import annotations

import argparse
import contextlib
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

from modules.hessian import HessianOperator, lanczos_eigenvalues, top_eigenvalues  # noqa: E402
from modules.objective import Objective  # noqa: E402
from modules.rules import RULES as RULE_REGISTRY  # noqa: E402
from rulescape.run.quiet import quiet_third_party  # noqa: E402
from rulescape.run.training import build_module, group_params  # noqa: E402
from datamodules import build_datamodule  # noqa: E402

RULES = sorted(RULE_REGISTRY)  # every registered rule, so that new ones are timed when they land
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


def lightning_step_ms(overrides: list[str], steps: int, warmup: int, empty: bool = False) -> float:
    """ms per step through the LightningModule and Trainer loop; empty=True: a training step that only steps
    the optimizer (no forward, no backward), i.e. the cost of Lightning's loop and the batch fetch alone."""
    cfg, dm, module = setup(overrides + [f"trainer.max_steps={steps + warmup}"])
    if empty:
        module.training_step = lambda batch, batch_idx: module.optimizers().step()
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


def train_step_table(task: str, steps: int, warmup: int, repeats: int, extra: list[str],
                     rules: list[str] | None = None) -> list[dict]:
    """Median over repeats, rules and the baseline interleaved so that drift hits all alike (`rules`: a subset
    of the registry; default every rule)."""
    base = [f"task={task}", "logger=none", *extra]
    rules = RULES if rules is None else rules
    times: dict[str, list[float]] = {"plain": [], "lightning loop (empty step)": [], **{r: [] for r in rules}}
    skipped: dict[str, str] = {}
    for _ in range(repeats):
        times["plain"].append(plain_step_ms(base, steps, warmup))
        times["lightning loop (empty step)"].append(lightning_step_ms(base, steps, warmup, empty=True))
        for rule in rules:
            if rule in skipped:
                continue
            try:
                times[rule].append(lightning_step_ms(base + [f"rule={rule}", *RULE_ARGS.get(rule, [])], steps,
                                                     warmup))
            except Exception as error:  # noqa: BLE001 - a rule that cannot run here is reported, not fatal
                skipped[rule] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                print(f"bench: skipping rule {rule} on {task}: {skipped[rule]}", flush=True)
                times.pop(rule)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    rows = [{"task": task, "what": k, "ms_per_step": med[k], "ratio_vs_plain": med[k] / med["plain"]} for k in med]
    return rows + [{"task": task, "what": k, "skipped": why} for k, why in skipped.items()]


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


class Snapshots(pl.Callback):
    """Copies of the network's weights at every step where the curvature callback measures."""

    def __init__(self, every: int, max_steps: int):
        self.every, self.max_steps, self.states = every, max_steps, []

    def keep(self, trainer, pl_module):
        self.states.append((trainer.global_step, {k: v.detach().cpu().clone()
                                                  for k, v in pl_module.net.state_dict().items()}))

    def on_train_start(self, trainer, pl_module):
        self.keep(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self.max_steps or (self.every and step % self.every == 0):
            self.keep(trainer, pl_module)


PYHESSIAN_TOLS = (1e-4, 1e-5, 1e-6, 1e-7)


def curvature_along_run(task: str, repeats: int, extra: list[str]) -> dict:
    """lambda_1 at every measurement point of a default run, ours (warm-started, in order) vs PyHessian,
    each checked against a converged reference to 1e-4 relative (see the module docstring)."""
    cfg, dm, module = setup([f"task={task}", "logger=none", *extra])
    c, max_steps = cfg.curvature, cfg.trainer.max_steps
    snaps = Snapshots(c.every_n_steps, max_steps)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, max_steps=max_steps, max_epochs=-1,
                         callbacks=[snaps], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    net, objective = module.net.to(DEVICE), module.objective
    batch = dm.curvature_batch(c.batch_size, cfg.seed)

    def load(state):
        with torch.no_grad():
            net.load_state_dict(state)

    reference, cold_products = [], []
    for _, state in snaps.states:
        load(state)
        op = HessianOperator(net, objective, batch, c.params)
        reference.append(float(lanczos_eigenvalues(op, 1, 1e-10, 300, seed=cfg.seed).eigenvalues[0]))
        cold_products.append(lanczos_eigenvalues(op, 1, c.tol, c.max_iter, seed=cfg.seed).iterations)
    rel = lambda values: [abs(v - r) / abs(r) for v, r in zip(values, reference)]  # noqa: E731

    def ours():  # what the callback does along the run: each measurement warm-started from the previous one
        ms, values, products, previous = [], [], [], None
        for _, state in snaps.states:
            load(state)
            start = now()
            op = HessianOperator(net, objective, batch, c.params)
            result = lanczos_eigenvalues(op, 1, c.tol, c.max_iter, seed=cfg.seed, previous=previous, vectors=True)
            previous = result.vectors.cpu()
            ms.append(1000 * (now() - start))
            values.append(float(result.eigenvalues[0]))
            products.append(result.iterations)
        return ms, values, products

    def pyhessian(tol):
        ms, values, products = [], [], []
        for _, state in snaps.states:
            load(state)
            with counted_pyhessian_products() as count:
                start = now()
                values.append(top_eigenvalues(net, objective, batch, c.params, 1, tol, 1000, seed=cfg.seed,
                                              backend="pyhessian")[0])
                ms.append(1000 * (now() - start))
            products.append(count[0])
        return ms, values, products

    runs = [ours() for _ in range(repeats)]
    ours_ms = min(sum(r[0]) for r in runs)
    ours_values, warm_products = runs[0][1], runs[0][2]
    for tol in PYHESSIAN_TOLS:
        pyh = [pyhessian(tol) for _ in range(repeats)]
        pyh_values = pyh[0][1]
        if max(rel(pyh_values)) < 1e-4:
            break
    pyh_ms, pyh_products = min(sum(r[0]) for r in pyh), pyh[0][2]
    # the profile: one product and one linearisation (forward + backward keeping the graph), timed alone
    load(snaps.states[-1][1])
    build_ms, op = time_call(lambda: HessianOperator(net, objective, batch, c.params), max(repeats, 3))
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0)).to(DEVICE, op.dtype)
    hvp_ms, _ = time_call(lambda: op.matvec(v), max(repeats, 3))
    profile = hvp_profile(op, v, batch[0].shape[1])
    # the same product by torch.func's reverse-over-reverse (what the hand-written one replaced for W_h)
    auto_build_ms, auto = time_call(lambda: HessianOperator(net, objective, batch, c.params, method="autograd"),
                                    max(repeats, 3))
    auto_hvp_ms, _ = time_call(lambda: auto.matvec(v), max(repeats, 3))
    return {"task": task, "steps": [s for s, _ in snaps.states], "reference": reference,
            "ours_ms": ours_ms, "ours_ms_each": ours_ms / len(reference), "ours_rel_err": max(rel(ours_values)),
            "warm_products": warm_products, "cold_products": cold_products, "pyhessian_tol": tol,
            "pyhessian_ms": pyh_ms, "pyhessian_rel_err": max(rel(pyh_values)), "pyhessian_products": pyh_products,
            "speedup": pyh_ms / ours_ms, "linearise_ms": build_ms, "hvp_ms": hvp_ms,
            "autograd_linearise_ms": auto_build_ms, "autograd_hvp_ms": auto_hvp_ms} | profile


@contextlib.contextmanager
def native_stderr_silenced():
    """The profiler's C++ side prints start/stop lines (and, on a CPU-only machine, a GPU-count error) to
    file descriptor 2; they are not ours to show."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def hvp_profile(op, v: torch.Tensor, steps: int) -> dict:
    """Where one Hessian-vector product's time goes (CPU): the share spent in matrix products and how many
    it runs per time step of the trial. Near 1 and near the minimum count, a product cannot get much cheaper."""
    if CUDA:
        return {"hvp_matmul_share": None, "hvp_matmuls_per_step": None}
    op.matvec(v)  # warm
    with native_stderr_silenced(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        op.matvec(v)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::baddbmm_")]
    return {"hvp_matmul_share": sum(e.self_cpu_time_total for e in matmul) / total,
            "hvp_matmuls_per_step": sum(e.count for e in matmul) / steps}


class counted_pyhessian_products:
    """Counts pyhessian's Hessian-vector products inside the block (patches the name its solver calls)."""

    def __enter__(self):
        import pyhessian.hessian  # noqa: F401  (the package re-exports the class under the module's name)
        module = sys.modules["pyhessian.hessian"]
        self.module, self.original, self.count = module, module.hessian_vector_product, [0]

        def counted(*args, **kwargs):
            self.count[0] += 1
            return self.original(*args, **kwargs)
        module.hessian_vector_product = counted
        return self.count

    def __exit__(self, *exc):
        self.module.hessian_vector_product = self.original


def cadence_table(task: str, extra: list[str]) -> dict:
    """The measurements' share of a real default run (`python train.py task=<task>`: BPTT, the task's default
    cadences), from the seconds each measurement callback spent, as its summary.json `timing` records them."""
    cmd = [sys.executable, "train.py", f"task={task}", "logger=none", *TRAINER, *extra]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(cmd + [f"hydra.run.dir={tmp}"], cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"},
                       check=True, capture_output=True)
        summary = json.loads(Path(tmp, "summary.json").read_text())
    timing, history = summary["timing"], summary["history"]
    counts = {"generalization": len(history.get("train_loss", [])), "curvature": len(history.get("lambda_max", [])),
              "alignment": len(history.get("rho", []))}
    measure = timing["measure_s"]
    each = {k: 1000 * measure.get(k, 0.0) / n if n else 0.0 for k, n in counts.items()}
    return {"task": task, "eval_ms": each["generalization"], "n_eval": counts["generalization"],
            "curvature_ms": each["curvature"], "n_curvature": counts["curvature"],
            "alignment_ms": each["alignment"], "n_alignment": counts["alignment"],
            "measure_s": sum(measure.values()), "train_s": timing["loop_s"] - sum(measure.values()),
            "fraction_of_run": timing["measure_share"]}


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
    parser.add_argument("--tasks", nargs="+", default=["dms", "seqmnist", "pattern"])
    parser.add_argument("--rules", nargs="+", choices=RULES, help="time only these rules (default: every one)")
    parser.add_argument("--steps-only", action="store_true", help="only table 1, ms per training step")
    parser.add_argument("--steps", type=int, help="timed steps per repeat (default 100; --tiny 5)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats, the median reported (default 5)")
    args = parser.parse_args(argv)
    quiet_third_party()
    say_once()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no per-Trainer banners in the table
    torch.set_num_threads(1)  # what a run uses (threads=1): one process per run is fastest here
    steps, warmup, repeats = (5, 2, 1) if args.tiny else (100, 10, 5)
    steps, repeats = args.steps or steps, args.repeats or repeats
    results = {"machine": machine(), "train_step": [], "along_run": [], "curvature": [], "cadence": []}
    for task in args.tasks:
        tiny = ["model.hidden_size=16", "task.train_size=64", "task.batch_size=16"] if args.tiny else []
        rows = train_step_table(task, steps, warmup, repeats, tiny, args.rules)
        results["train_step"] += rows
        if args.steps_only:
            continue
        short = ["trainer.max_steps=40", "curvature.every_n_steps=10"] if args.tiny else []
        along = curvature_along_run(task, 1 if args.tiny else 2, tiny + short)
        results["along_run"].append(along)
        results["curvature"].append(curvature_table(task, min(repeats, 3), 0 if args.tiny else 200, tiny))
        results["cadence"].append(cadence_table(task, tiny + short))
    extra = ["trainer.max_steps=20", "model.hidden_size=16"] if args.tiny else []
    if not args.steps_only:
        results["default_run"] = default_run_wall(extra)
    results["tiny"] = args.tiny
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


class OncePerMessage(logging.Filter):
    """Let each distinct message through once: the bench builds every rule many times, and a rule's
    construction warning (MDGL's "cell-type-averaged weights are negligible") says the same thing each time."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def say_once() -> None:
    """Every rule module's logger says each warning once per bench run."""
    once = OncePerMessage()
    for rule in RULE_REGISTRY.values():
        logging.getLogger(rule.__module__).addFilter(once)


def one_line(text: str, limit: int = 120) -> str:
    """A table cell: one line, no `|`, at most `limit` characters."""
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def print_tables(results: dict) -> None:
    m = results["machine"]
    smoke = ("SMOKE CHECK (--tiny): toy sizes and a few steps, so that bench.py cannot rot. These figures"
             " (ms, errors, speed-ups, runs/hour) say nothing about speed or accuracy; run `python bench.py`.")
    if results.get("tiny"):
        print(f"\n{smoke}")
    print(f"\nmachine: {m['cpu_count']} CPUs, torch {m['torch']}, {m['threads']} thread(s), cuda: {m['cuda']}")
    print("\n| task | step | ms/step | x plain BPTT |\n|---|---|---:|---:|")
    skipped = [r for r in results["train_step"] if "skipped" in r]
    for r in results["train_step"]:
        if "skipped" in r:
            print(f"| {r['task']} | {r['what']} | skipped (below) | |")
        else:
            print(f"| {r['task']} | {r['what']} | {r['ms_per_step']:.2f} | {r['ratio_vs_plain']:.2f} |")
    if skipped:  # the reasons under the table, one line each: a table row stays one row
        print("\nskipped: " + "; ".join(f"{r['what']} on {r['task']}: {one_line(r['skipped'])}" for r in skipped))
    if "default_run" not in results:  # --steps-only
        return
    print("\nlambda_1 along a default run (every measurement point, each checked against a converged reference):"
          "\n| task | points (steps) | ours ms (max rel err) | ours HVPs warm / cold | PyHessian ms (tol, max rel err) "
          "| PyHessian HVPs | HVP ratio | speed-up | 1 HVP ms (autograd) | 1 linearisation ms (autograd) "
          "| HVP in matmuls | matmuls per time step |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["along_run"]:
        print(f"| {r['task']} | {len(r['steps'])} ({r['steps'][0]}..{r['steps'][-1]}) | {r['ours_ms']:.0f} "
              f"({r['ours_rel_err']:.1e}) | {sum(r['warm_products'])} / {sum(r['cold_products'])} | "
              f"{r['pyhessian_ms']:.0f} ({r['pyhessian_tol']:.0e}, {r['pyhessian_rel_err']:.1e}) | "
              f"{sum(r['pyhessian_products'])} | {sum(r['pyhessian_products']) / sum(r['warm_products']):.1f}x | "
              f"{r['speedup']:.1f}x | {r['hvp_ms']:.1f} ({r['autograd_hvp_ms']:.1f}) | {r['linearise_ms']:.1f} "
              f"({r['autograd_linearise_ms']:.1f}) | {percent(r['hvp_matmul_share'])} | "
              f"{'-' if r['hvp_matmuls_per_step'] is None else format(r['hvp_matmuls_per_step'], '.1f')} |")
    print("\n| task | eigenvalues | lambda_1 | lanczos ms (rel err) | pyhessian ms (rel err) | speed-up |"
          "\n|---|---|---:|---:|---:|---:|")
    for r in results["curvature"]:
        print(f"| {r['task']} | top-1 | {r['lambda_ref']:.4g} | {r['lanczos_ms']:.0f} ({r['lanczos_rel_err']:.1e}) | "
              f"{r['pyhessian_ms']:.0f} ({r['pyhessian_rel_err']:.1e}) | {r['speedup']:.1f}x |")
        print(f"| {r['task']} | top-3 | {r['lambda_ref']:.4g} | {r['top3_lanczos_ms']:.0f} "
              f"({r['top3_lanczos_rel_err']:.1e}) | {r['top3_pyhessian_ms']:.0f} ({r['top3_pyhessian_rel_err']:.1e}) | "
              f"{r['top3_speedup']:.1f}x |")
    print("\nmeasurements in a default run (`python train.py task=<task>`, its summary.json `timing`):"
          "\n| task | eval ms x n | lambda_1 ms x n | alignment ms x n | measurements s | training s | share |"
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
