"""Records at smoke size (a few steps) make any verdict meaningless: report.md says so on top."""
from __future__ import annotations

import statistics

from analysis.load import Run

TOY_STEPS = 100  # a run's training shorter than this is toy-sized (experiment=smoke trains 20 steps)


def toy_sized(runs: list[Run]) -> bool:
    """True when the median training length of the ok runs is below TOY_STEPS."""
    steps = [r.value("steps") for r in runs if r.ok and r.value("steps") is not None]
    return bool(steps) and statistics.median(steps) < TOY_STEPS


BANNER = (f"> **Toy-sized: verdicts not meaningful.** The median ok run trained fewer than {TOY_STEPS} steps "
          "(a smoke-size setup): the tests below run, but nothing they say is a finding.")
