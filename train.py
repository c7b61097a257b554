"""Train one rate RNN with one credit-assignment rule:  python train.py rule=rflo task=dms
Sweep:  python train.py -m rule=bptt,eprop,rflo,mdgl seed=0,1,2 task=dms.  See README."""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rulescape.cli import preflight
from rulescape.errors import EXIT_CONFIG, ConfigError

log = logging.getLogger("rulescape")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    from rulescape.report_line import print_summary
    from rulescape.run import STATUS_EXIT, train  # after preflight: a refused command line never imports torch
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = train(cfg, hydra_cfg.runtime.output_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if multirun:  # a bad job must not stop the sweep; its summary.json says "failed"
            return "failed"
        sys.exit(EXIT_CONFIG)
    print_summary(summary, hydra_cfg.runtime.output_dir)
    if not multirun and summary["status"] != "ok":
        sys.exit(STATUS_EXIT[summary["status"]])
    return summary["status"]


if __name__ == "__main__":
    from rulescape.targets import override_target_problem
    problem = override_target_problem(sys.argv[1:]) or preflight(sys.argv[1:])
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    main()
