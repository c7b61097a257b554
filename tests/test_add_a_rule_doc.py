"""docs/add-a-rule.md is enough to write a rule: its example runs as printed (exact loss and readout, the
feedback switch at `switch`), the seed-keyed fixed draw does what the page says, and the page names every
attribute the base classes use."""
from __future__ import annotations

import re

import pytest
import torch

import modules.rules as rules_pkg
from conftest import ROOT
from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules.base import FollowsHistory, Rule, StochasticRule

DOC = (ROOT / "docs" / "add-a-rule.md").read_text()


def example_rule(monkeypatch):
    """The page's first Python block, executed as printed (without filing the rule in the registry)."""
    code = re.search(r"```python\n(.*?)```", DOC, re.S).group(1)
    monkeypatch.setattr(rules_pkg, "register", lambda cls: cls)
    space: dict = {}
    exec(compile(code, "docs/add-a-rule.md", "exec"), space)
    return space["MyRule"]


def net_and_batch(seed=0):
    torch.manual_seed(seed)
    net = RateRNN(3, 8, 2, alpha=0.5).double()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    return net, (x, torch.randint(0, 2, (4, 6)), torch.ones(4, 6, dtype=torch.float64))


def test_the_example_rule_runs_as_printed(monkeypatch):
    MyRule = example_rule(monkeypatch)
    net, batch = net_and_batch()
    torch.manual_seed(1)
    rule = MyRule(net, switch=5)
    objective = Objective("ce")
    y_exact, _ = net(batch[0])
    exact = objective(y_exact, batch[1], batch[2], [net.W_x, net.W_h, net.W_out])
    g_exact = torch.autograd.grad(exact, [net.W_out, net.W_h])
    grads = {}
    for step in (0, 5):
        rule.on_step(step)
        est = rule.surrogate(net, batch, objective)
        assert torch.allclose(est.loss, exact) and torch.allclose(est.y_hat, y_exact)  # the exact forward
        grads[step] = torch.autograd.grad(est.surrogate, [net.W_out, net.W_h])
        torch.testing.assert_close(grads[step][0], g_exact[0])  # the readout's gradient stays exact
    assert not torch.allclose(grads[0][1], grads[5][1])  # the feedback switched at `switch`
    assert "feedback" in rule.state_dict()  # checkpointed
    with pytest.raises(ValueError, match="rule.scale"):
        MyRule(net, scale=0)


def test_fixed_draw_is_keyed_on_the_seed_and_the_name():
    net, _ = net_and_batch()

    def draws(seed, names):
        torch.manual_seed(seed)
        rule = Rule(net)
        return {n: rule.fixed_draw(n, 5, 2, like=net.W_out) for n in names}

    a, b = draws(3, ["feedback"]), draws(3, ["feedback", "projection"])
    assert torch.equal(a["feedback"], b["feedback"])  # a second draw does not change the first
    assert not torch.equal(b["feedback"], b["projection"])
    assert not torch.equal(a["feedback"], draws(4, ["feedback"])["feedback"])
    assert a["feedback"].dtype == torch.float64 and a["feedback"].shape == (5, 2)


def test_the_page_names_every_reserved_attribute():
    net, _ = net_and_batch()
    section = DOC[DOC.index("### Reserved names"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    used = set(vars(Rule)) | set(vars(Rule(net))) | set(vars(StochasticRule)) | set(vars(FollowsHistory))
    public = {n for n in used if not n.startswith("_") and n not in ("get_extra_state", "set_extra_state")}
    missing = sorted(n for n in public if f"`{n}`" not in section)
    assert not missing, missing


def test_the_page_says_how_to_run_a_longer_smoke_study():
    assert "study.smoke=true trainer.max_steps=" in DOC
