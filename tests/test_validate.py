"""Every value is range-checked before anything runs (issue 26, item 6): each family of values that used to end
in a traceback, or ran and recorded NaN as null, is refused by train.py's preflight with one line naming the
key, exit 2, before Hydra makes a run directory; the memory estimate is a lower bound of what the data
modules really allocate; `train.py --help` lists the groups, their options and examples."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, compose_config
from rulescape.config import validate as validate_module
from rulescape.config.schema import check_schema
from rulescape.errors import ConfigError
from rulescape.run.cli import group_options, preflight

LONG = "x" * 300

REFUSED = [  # (overrides, words the one line must contain)
    # a non-finite network gain
    (["model.g=inf"], ["model.g=inf", "finite"]),
    (["model.g=nan"], ["model.g=nan", "finite"]),
    # negative or huge task timings, also neurogym's timing keywords
    (["task.delay=-100"], ["task.delay=-100", "[0, inf)"]),
    (["task.dt=0"], ["task.dt=0", "(0, inf)"]),
    (["task.delay=1e30"], ["GiB", "steps per trial"]),
    (["task=pattern", "task.duration=1e25"], ["GiB", "steps per trial"]),
    (["task.shift_delays=[300,-1]"], ["task.shift_delays[1]=-1"]),
    (["task=neurogym", "task.kwargs={timing: {delay: -500}}"], ["task.kwargs.timing.delay=-500", ">= 0"]),
    (["task=neurogym", "task.test_kwargs={timing: {delay: [uniform, [100, -5]]}}"],
     ["task.test_kwargs.timing.delay[1][1]=-5"]),
    (["task=neurogym", "task.kwargs={timing: {delay: 1e18}}"], ["GiB", "steps per trial"]),
    (["task=neurogym", "task.kwargs={timing: {delay: inf}}"], ["task.kwargs.timing.delay=inf", "finite"]),
    # data sets too large for memory
    (["task.train_size=2000000000", "task.test_size=2000000000"], ["GiB", "steps per trial"]),
    # a Lanczos size above what it supports
    (["curvature.k=5000", "curvature.max_iter=6000"], ["curvature.k=5000", "[1, 1000]"]),
    (["model.hidden_size=4", "curvature.k=17", "curvature.max_iter=20"], ["curvature.k=17", "16 eigenvalues"]),
    (["curvature.max_iter=100000"], ["curvature.max_iter=100000"]),
    # an integer overflow in step counts
    (["trainer.max_steps=9223372036854775808"], ["trainer.max_steps=9223372036854775808", "integer"]),
    (["eval_every=1099511627776"], ["eval_every=1099511627776", "integer"]),
    (["stop_check_every=4294967296"], ["stop_check_every"]),
    # an over-long path
    ([f"ckpt_path=/tmp/{LONG}/last.ckpt"], ["ckpt_path=", "path"]),
    ([f"hydra.run.dir=/tmp/{LONG}"], ["hydra.run.dir", "too long"]),
    # a NaN (or infinite) noise level is refused, never recorded as null
    (["task.noise=nan"], ["task.noise=nan", "finite"]),
    (["task.test_noise=inf"], ["task.test_noise=inf"]),
    (["model.noise_std=nan"], ["model.noise_std=nan"]),
    (["task=neurogym", "task.kwargs={sigma: nan}"], ["task.kwargs.sigma=nan"]),
    (["rule=node_perturbation", "rule.sigma=nan"], ["rule.sigma=nan"]),
    # choices declared in the schema
    (["task=seqmnist", "task.source=floppy"], ["task.source='floppy'", "mlxtend5k", "torchvision"]),
    (["task=neurogym", "task.loss_on=sometimes"], ["task.loss_on='sometimes'", "decision", "all"]),
]


@pytest.mark.parametrize("overrides,words", REFUSED, ids=[" ".join(o)[:60] for o, _ in REFUSED])
def test_each_family_of_bad_values_is_refused_before_anything_runs(tmp_path, overrides, words):
    run_dir = tmp_path / "run"
    argv = [f"hydra.run.dir={run_dir}", *overrides] if not any("hydra.run.dir" in o for o in overrides) \
        else overrides
    line = preflight(argv)
    assert line and line.startswith("error: ") and "\n" not in line, line
    for word in words:
        assert word in line, line
    assert not run_dir.exists()


def test_an_over_long_sweep_directory_is_refused_before_any_job_starts(tmp_path):
    line = preflight(["-m", f"hydra.sweep.dir={tmp_path}/{LONG}", "seed=0,1"])
    assert line and line.startswith("error: hydra.sweep.dir=") and "too long" in line, line


def test_the_same_values_are_refused_inside_the_run_with_a_failed_record(tmp_path):
    """train() (what a sweep job runs) applies the same checks: one line, a 'failed' record, nothing trained."""
    from rulescape.run.training import train
    for i, overrides in enumerate((["task.noise=nan"], ["model.g=inf"], ["task.delay=-1"])):
        with pytest.raises(ConfigError, match=overrides[0].split("=")[0]):
            train(compose_config(["logger=none", *overrides]), tmp_path / str(i))
        assert not (tmp_path / str(i) / "checkpoints").exists()


@pytest.mark.parametrize("task", ["dms", "pattern", "neurogym"])
def test_memory_estimate_of_the_data_is_a_lower_bound_of_what_the_datamodule_allocates(task):
    """The estimate's data part never exceeds the bytes of the sets the datamodule really builds (so it never
    refuses a run that would fit), and is within a small factor of them (so it does catch a huge one)."""
    from datamodules import TASKS
    from rulescape.run.training import group_params
    extra = {"dms": ["task.delay=700"], "pattern": ["task.duration=1400"],
             "neurogym": ["task.kwargs={timing: {fixation: 300, sample: 500, delay: 1000, test: 500, decision: 900}}"]}
    cfg = check_schema(compose_config([f"task={task}", "task.train_size=64", "task.test_size=64", *extra[task]]))
    dm = TASKS[task](**group_params(cfg.task, "name", "alpha", "study"))
    dm.setup()
    sets = [s for s in (dm.train_set, dm.test_set, getattr(dm, "shift_set", None)) if s is not None]
    actual = sum(t.element_size() * t.numel() for s in sets for t in (s.x, s.y, s.mask))
    estimate = next(v for k, v in validate_module.memory_parts(cfg).items() if k.startswith("task="))
    assert estimate <= actual < 40 * estimate, (estimate, actual)


def test_memory_check_refuses_only_above_the_machine(monkeypatch):
    cfg = check_schema(compose_config(["task.train_size=100000"]))
    need = sum(validate_module.memory_parts(cfg).values())
    monkeypatch.setattr(validate_module, "memory_bytes", lambda: int(need) + 1)
    validate_module.check_memory(cfg)
    monkeypatch.setattr(validate_module, "memory_bytes", lambda: int(need) - 1)
    with pytest.raises(ConfigError, match="task.train_size=100000.* GiB"):
        validate_module.check_memory(cfg)


def test_every_default_passes_its_own_declaration():
    """Each option of each group, composed with the defaults, passes the schema's checks as it stands."""
    for group in ("task", "rule", "optimizer", "scheduler", "logger", "experiment", "arm"):
        for option in group_options(group):
            if group == "rule" and option == "bptt_scaled":
                continue  # needs rule.rho or rule.rho_from by design
            try:
                check_schema(compose_config([f"{group}={option}"]))
            except ConfigError as err:  # a control arm reads its sweep's directory: only inside a Hydra job
                assert "HydraConfig was not set" in str(err), (group, option, err)


def test_help_lists_usage_groups_options_keys_and_examples():
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "Hydra" not in proc.stdout.split("More:")[0], proc.stdout + proc.stderr
    text = proc.stdout
    assert text.startswith("usage: python train.py") and "examples:" in text
    for group in ("rule", "task", "experiment", "arm", "model", "optimizer", "trainer", "logger"):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{group}="))
        for option in group_options(group):
            assert option in line, (group, option, line)
    for name in ("seed=", "model.hidden_size=", "optimizer.lr=", "trainer.max_steps="):
        assert name in text
    examples = text.split("examples:")[1].split("\n\n")[0].strip().splitlines()
    assert len(examples) == 3 and all(e.strip().startswith("python train.py") for e in examples)
