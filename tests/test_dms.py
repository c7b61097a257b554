"""Delayed match-to-sample data: shapes, seeded draws, the train/test protocol, and labels decoded back from
the stimuli themselves."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from datamodules.dms import DMSDataModule

SMALL = dict(train_size=256, test_size=256)


def sets(**kw):
    dm = DMSDataModule(**{**SMALL, **kw})
    dm.setup()
    return dm, dm.train_set, dm.test_set


def stimulus_windows(x: torch.Tensor, amplitude: float = 1.0):
    """From noiseless trials (n, T, C): the channel and on-steps of the two stimuli of each trial, read off the
    input alone: (sample channel, test channel, sample on-steps (n, T), test on-steps (n, T))."""
    on = x > amplitude / 2                                   # (n, T, C)
    any_on = on.any(-1)                                      # (n, T)
    # the test stimulus is the burst that runs to the end of the trial; the sample is the earlier one
    off_before_end = torch.where(~any_on, torch.arange(x.shape[1]), -1).max(1).values   # last silent step
    test_steps = torch.arange(x.shape[1])[None, :] > off_before_end[:, None]
    sample_steps = any_on & ~test_steps
    sample_channel = (on & sample_steps[..., None]).sum(1).argmax(-1)
    test_channel = (on & test_steps[..., None]).sum(1).argmax(-1)
    return sample_channel, test_channel, sample_steps, test_steps


def test_shapes_dtypes_and_loss_on_the_last_step():
    dm, train, test = sets(response_steps=2)
    assert dm.T == 50 and dm.input_size == 2 and dm.output_size == 2 and dm.loss == "ce"
    for trials, n in ((train, 256), (test, 256)):
        assert trials.x.shape == (n, 50, 2) and trials.x.dtype == torch.float32
        assert trials.y.shape == (n, 50) and trials.y.dtype == torch.int64
        assert trials.mask.shape == (n, 50) and trials.mask.dtype == torch.float32
        assert torch.equal(trials.mask[:, -2:], torch.ones(n, 2)) and trials.mask[:, :-2].sum() == 0
        assert torch.equal(trials.y, trials.y[:, :1].expand(n, 50))     # one label per trial
        assert set(trials.y.unique().tolist()) == {0, 1}


def test_same_seed_same_data_other_seed_other_data():
    _, a_train, a_test = sets(seed=5)
    _, b_train, b_test = sets(seed=5)
    _, c_train, _ = sets(seed=6)
    assert torch.equal(a_train.x, b_train.x) and torch.equal(a_train.y, b_train.y)
    assert torch.equal(a_test.x, b_test.x) and torch.equal(a_test.y, b_test.y)
    assert not torch.equal(a_train.x, c_train.x)


def test_test_trials_are_fresh_draws_never_training_trials():
    # same noise level for both sets, so only the random stream can tell them apart
    _, train, test = sets(noise=0.1, test_noise=0.1)
    distance = torch.cdist(test.x.flatten(1), train.x.flatten(1))
    assert distance.min() > 0.5    # 100 noisy values of std 0.1 apart: ~1.4 expected, 0 for a shared draw
    # ... and the noise itself is independent between the sets
    clean_free = slice(0, 5)       # fixation: no stimulus, pure noise
    r = torch.corrcoef(torch.stack([train.x[:, clean_free].flatten(), test.x[:, clean_free].flatten()]))[0, 1]
    assert abs(r) < 0.1


def test_noise_levels_train_clean_and_test_noisy():
    _, train, test = sets(noise=0.0, test_noise=0.5)
    assert set(train.x.unique().tolist()) <= {0.0, 1.0}                  # training inputs carry no noise
    fixation = test.x[:, :5]                                              # 100 ms, no stimulus: pure noise
    assert fixation.std().item() == pytest.approx(0.5, rel=0.05)
    _, train, test = sets(noise=0.1, test_noise=0.3)
    assert train.x[:, :5].std().item() == pytest.approx(0.1, rel=0.05)
    assert test.x[:, :5].std().item() == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("n_stimuli", [2, 3])
def test_labels_are_balanced_and_mean_match(n_stimuli):
    _, train, test = sets(n_stimuli=n_stimuli, noise=0.0, test_noise=0.0)
    for trials in (train, test):
        label = trials.y[:, 0]
        assert int(label.sum()) == len(label) // 2                       # exactly half match
        sample, probe, _, _ = stimulus_windows(trials.x)
        assert torch.equal(label, (sample == probe).long())               # decoded from the inputs alone
        assert len(sample.unique()) == n_stimuli


def test_timing_of_training_trials_and_shifted_delays():
    dm, train, _ = sets(noise=0.0, test_noise=0.0, shift_delays=[300.0, 600.0])
    test = dm.shift_set
    _, _, sample_steps, test_steps = stimulus_windows(train.x)
    assert torch.equal(sample_steps.sum(1), torch.full((256,), 10))       # 200 ms sample
    assert torch.equal(test_steps.sum(1), torch.full((256,), 10))         # 200 ms test, to the end
    t = torch.arange(50)

    def delays(sample_steps, test_steps):
        sample_end = torch.where(sample_steps, t, -1).max(1).values + 1
        test_start = torch.where(test_steps, t, 99).min(1).values
        return (test_start - sample_end) * dm.dt

    assert set(delays(sample_steps, test_steps).tolist()) == {500.0}      # the training delay
    _, _, sample_steps, test_steps = stimulus_windows(test.x)
    assert set(delays(sample_steps, test_steps).tolist()) == {300.0, 600.0}
    assert torch.equal(test.mask[:, -1], torch.ones(256))                 # the response stays at the end


def test_impossible_shift_delay_is_refused():
    with pytest.raises(ValueError, match="shift_delays"):
        DMSDataModule(shift_delays=[2000.0])


def test_headline_test_set_is_the_training_distribution_and_the_shift_set_is_separate():
    """By default test trials are fresh draws of the training distribution (same noise, same delay); the
    shifted set (larger noise) is another stream, and absent unless asked for."""
    dm, train, test = sets(noise=1.0)
    assert dm.test_noise == 1.0 and dm.shift_set is None
    assert float(test.x.std()) == pytest.approx(float(train.x.std()), rel=0.05)
    dm, train, test = sets(noise=1.0, shift_noise=1.5)
    assert float(dm.shift_set.x.std()) > 1.3 * float(test.x.std())
    assert not torch.equal(dm.shift_set.x[:, :, :1], test.x[:, :, :1])


def test_ideal_observer_is_perfect_without_noise_and_worse_with_more():
    dm, train, _ = sets(noise=1e-3)
    assert dm.ideal_observer_accuracy(train, 1e-3) == 1.0
    dm, _, test = sets(noise=1.0, test_size=4096)
    easy = dm.ideal_observer_accuracy(test, 1.0)
    dm, _, test = sets(noise=2.0, test_size=4096)
    hard = dm.ideal_observer_accuracy(test, 2.0)
    assert 0.9 < easy < 1.0 and 0.55 < hard < easy


# ----- the headline command is one seed of the study (issue 22) --------------------------------------------
CONF = Path(__file__).resolve().parent.parent / "conf"


def resolved(cfg, *keys):
    return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in keys}


@pytest.mark.parametrize("task", ["dms", "seqmnist"])
@pytest.mark.parametrize("rule", ["bptt", "eprop", "rflo", "mdgl"])
def test_default_run_is_one_seed_of_the_study_arm(task, rule):
    """`train.py rule=X task=T` builds the network, rule, optimizer, data and regulariser of the study's arm X
    (experiment=study_T arm=X); only the stop and the measurement cadence differ."""
    default = compose_config([f"task={task}", f"rule={rule}"])
    study = compose_config([f"experiment=study_{task}", f"arm={rule}"])
    keys = ("model", "rule", "optimizer", "task", "l2", "seed", "float64")
    assert resolved(default, *keys) == resolved(study, *keys)
    assert study.model.dale is (task == "dms") and study.model.alpha == {"dms": 0.1, "seqmnist": 1.0}[task]


def sweep_arms(task: str) -> list[str]:
    preset = OmegaConf.load(CONF / "experiment" / f"study_{task}.yaml")
    return str(preset.hydra.sweeper.params.arm).split(",")


@pytest.mark.parametrize("task", ["dms", "seqmnist", "pattern", "neurogym"])
def test_every_arm_of_the_study_presets_composes_with_its_measurements(task):
    arms = sweep_arms(task)
    present = [a for a in arms if (CONF / "arm" / f"{a}.yaml").is_file()]
    assert present == arms, f"arms without a conf/arm file: {sorted(set(arms) - set(present))}"
    assert {"bptt", "eprop", "rflo", "mdgl", "uoro", "node_perturbation", "bptt_matched", "bptt_matched_mean",
            "bptt_noise", "eprop_lr_rho"} <= set(present)
    assert {"bptt_early", "bptt_early_loss"} & set(present)  # pattern stops early on test loss
    for arm in present:
        cfg = compose_config([f"experiment=study_{task}", f"arm={arm}"])
        # bptt_early_loss is pattern's bptt_early (stopped on test loss): its records carry that arm's name
        assert cfg.study_arm == {"bptt_early_loss": "bptt_early"}.get(arm, arm)
        assert resolved(cfg, "optimizer")["optimizer"]["lr"] > 0
        # lambda_1 trajectories at every study run; the trace and relative flatness are in no claim of the
        # plan, and the second edition leaves them out (6x the curvature time, conf/experiment/study_dms.yaml)
        assert cfg.curvature.every_n_steps == 100 and not cfg.curvature.trace and not cfg.curvature.flatness


@pytest.mark.parametrize("rule", ["bptt", "eprop", "rflo", "mdgl"])
def test_own_lr_arm_differs_from_the_shared_arm_in_the_lr_alone(rule):
    shared = compose_config(["experiment=study_dms", f"arm={rule}"])
    own = compose_config(["experiment=study_dms", f"arm={rule}_own_lr"])
    assert own.optimizer.lr == shared.task.rule_lr[rule] and shared.optimizer.lr == shared.task.lr
    keys = ("model", "rule", "task", "l2", "seed")
    assert resolved(own, *keys) == resolved(shared, *keys)
    assert f"{rule}_own_lr" in sweep_arms("dms")


@pytest.mark.parametrize("arm", ["eprop", "bptt_matched_len"])
def test_a_study_arm_runs_alone_outside_its_sweep(arm):
    """`train.py experiment=study_dms arm=X` (one run, no sweep): the arm's `${hydra:sweep.dir}/...` globs
    resolve at the command line's check as in Hydra's job (they name no directory there, and the run goes on
    without them); the check used to refuse it ("HydraConfig was not set")."""
    from rulescape.run.cli import preflight
    assert preflight(["experiment=study_dms", f"arm={arm}", "seed=105", "logger=none",
                      "hydra.run.dir=outputs/never_created"]) is None
