"""Cued pattern generation (datamodules/pattern.py): the data against a plainly written numpy reference,
and the property the study needs: test trials are cues never trained on, and a network that memorised the
trained patterns gets them wrong."""
import math

import numpy as np
import pytest
import torch

from datamodules.pattern import PatternDataModule

TRAINED = np.linspace(0, 1, 5)
HELD_OUT = (TRAINED[1:] + TRAINED[:-1]) / 2


def pattern(**kw):
    dm = PatternDataModule(**{"train_size": 60, "test_size": 64, **kw})
    dm.setup()
    return dm


def reference_target(dm, cue: float) -> np.ndarray:
    """y_c(t) written out: sum_k a_k sin(2 pi (1 + (speed - 1) c) t / P_k + phi_k), before the common scale."""
    t = np.arange(50) * 20.0
    s = 1 + (1.5 - 1) * cue
    a, phi = dm.amplitudes.double().numpy(), dm.phases.double().numpy()
    return sum(a[k] * np.sin(2 * np.pi * s * t / p + phi[k]) for k, p in enumerate([1000.0, 500.0, 333.0, 200.0]))


def cues_of(trials) -> np.ndarray:
    return trials.x[:, 0, -1].double().numpy()  # noise-free sets: the cue channel holds the cue


def test_shapes_dtypes_and_loss_on_every_step():
    dm = pattern()
    assert dm.T == 50 and (dm.input_size, dm.output_size, dm.loss, dm.has_accuracy) == (11, 1, "mse", False)
    for trials, n in ((dm.train_set, 60), (dm.test_set, 64)):
        assert trials.x.shape == (n, 50, 11) and trials.x.dtype == torch.float32
        assert trials.y.shape == (n, 50, 1) and trials.y.dtype == torch.float32
        assert torch.equal(trials.mask, torch.ones(n, 50))


def test_training_on_trained_cues_in_turn_and_test_on_the_midpoints_only():
    dm = pattern(noise=0.0, test_noise=0.0)
    train, test = cues_of(dm.train_set), cues_of(dm.test_set)
    assert np.allclose(np.sort(np.unique(train.round(6))), TRAINED)
    assert np.allclose(np.sort(np.unique(test.round(6))), HELD_OUT)
    assert np.bincount(np.searchsorted(TRAINED, train.round(6))).tolist() == [12] * 5     # balanced
    assert np.abs(test[:, None] - TRAINED[None, :]).min() >= 0.125 - 1e-6                 # never a trained cue
    # the cue is constant over the trial; the clock channels are the same frozen pattern on every trial
    assert torch.equal(dm.train_set.x[:, :, -1], dm.train_set.x[:, :1, -1].expand(60, 50))
    assert torch.equal(dm.test_set.x[:, :, :10], dm.pattern.expand(64, 50, 10))
    assert dm.pattern.std().item() == pytest.approx(1.0, rel=0.15)


def test_targets_are_the_cued_sum_of_sinusoids_under_one_common_scale():
    dm = pattern(seed=3, noise=0.0, test_noise=0.0)
    ratios = []
    for trials in (dm.train_set, dm.test_set):
        for cue, y in zip(cues_of(trials), trials.y[:, :, 0].double().numpy()):
            ref = reference_target(dm, cue)
            ratios.append(ref[np.argmax(np.abs(ref))] / y[np.argmax(np.abs(ref))])
            assert np.allclose(y * ratios[-1], ref, atol=1e-5)
    assert np.allclose(ratios, ratios[0], rtol=1e-5)                    # one scale for every cue ...
    fine = np.stack([reference_target(dm, c) for c in np.linspace(0, 1, 201)])
    assert np.abs(fine).max() / ratios[0] == pytest.approx(1.0, rel=1e-5)   # ... that makes max |y| = 1
    assert ((0.5 <= dm.amplitudes) & (dm.amplitudes <= 2.0)).all()
    assert ((0 <= dm.phases) & (dm.phases < 2 * math.pi)).all()


def test_a_network_that_memorised_the_trained_patterns_gets_the_test_cues_wrong():
    """The gap can open: predicting a held-out cue's pattern with the nearest trained cue's pattern, or with
    the mean of its two neighbours' patterns (what a network that did not learn the tempo might produce),
    leaves a large share of the target's variance unexplained on the test set; the exact pattern leaves none."""
    for seed in range(5):
        dm = pattern(seed=seed, noise=0.0, test_noise=0.0)
        test_y = dm.test_set.y[:, :, 0].double().numpy()
        variance = test_y.var()
        neighbours = [(dm.target(torch.tensor([c - 0.125])), dm.target(torch.tensor([c + 0.125])))
                      for c in cues_of(dm.test_set)]
        nearest = np.stack([lo[0].double().numpy() for lo, _ in neighbours])
        average = np.stack([((lo + hi) / 2)[0].double().numpy() for lo, hi in neighbours])
        assert ((nearest - test_y) ** 2).mean() / variance > 0.2
        assert ((average - test_y) ** 2).mean() / variance > 0.05
        exact = np.stack([reference_target(dm, c) for c in cues_of(dm.test_set)]) / dm.scale
        assert ((exact - test_y) ** 2).mean() / variance < 1e-10


def test_noise_levels_and_fresh_test_realisations():
    dm = pattern(noise=0.1, test_noise=0.4, shift_noise=0.6)
    clean_train = pattern(noise=0.0, test_noise=0.0, shift_noise=0.0)
    train_noise = dm.train_set.x - clean_train.train_set.x
    test_noise = dm.test_set.x - clean_train.test_set.x
    shift_noise = dm.shift_set.x - clean_train.shift_set.x
    assert train_noise.std().item() == pytest.approx(0.1, rel=0.05)
    assert test_noise.std().item() == pytest.approx(0.4, rel=0.05)
    assert shift_noise.std().item() == pytest.approx(0.6, rel=0.05)
    assert torch.equal(dm.shift_set.y, dm.test_set.y)                       # the held-out cues, noisier
    same = pattern(noise=0.3, test_noise=0.3)
    a = (same.train_set.x - clean_train.train_set.x).flatten()
    b = (same.test_set.x - clean_train.test_set.x)[:60].flatten()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.05   # another stream, not a re-draw


def test_same_seed_same_data_other_seed_other_task():
    a, b, c = pattern(seed=2), pattern(seed=2), pattern(seed=4)
    for name in ("x", "y", "mask"):
        assert torch.equal(getattr(a.train_set, name), getattr(b.train_set, name))
        assert torch.equal(getattr(a.test_set, name), getattr(b.test_set, name))
    assert not torch.allclose(a.train_set.y, c.train_set.y) and not torch.allclose(a.pattern, c.pattern)


@pytest.mark.parametrize("kw, match", [({"periods": [30.0]}, "Nyquist"), ({"periods": [50.0], "speed": 1.5}, "Nyquist"),
                                       ({"train_cues": 1}, "train_cues"), ({"speed": 0.5}, "speed")])
def test_refuses_bad_values_naming_them(kw, match):
    with pytest.raises(ValueError, match=match):
        PatternDataModule(**kw)
