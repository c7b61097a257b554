"""Train one rate RNN with one credit-assignment rule:  python train.py rule=rflo task=dms
Sweep:  python train.py -m rule=bptt,eprop,rflo,mdgl seed=0,1,2 task=dms.  See README."""
from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130  # rulescape.errors.EXIT_INTERRUPTED, before anything is imported


class Stop:
    """SIGINT and SIGTERM (a scheduler's stop) raise KeyboardInterrupt at any moment, imports and checks
    included (Lightning installs its own handler during fit, with the same outcome); `held` defers them
    while Hydra makes the run directory, so that main() receives them where it can record them."""
    held = False
    pending: list[int] = []
    in_main = False  # main() began: Hydra made the run directory

    received = False  # a signal arrived (a library may have turned its KeyboardInterrupt into an error)

    @classmethod
    def handler(cls, signum, frame):
        cls.received = True
        if cls.held:
            cls.pending.append(signum)
            return
        raise KeyboardInterrupt

    @classmethod
    def install(cls) -> None:
        signal.signal(signal.SIGINT, cls.handler)
        signal.signal(signal.SIGTERM, cls.handler)

    @classmethod
    def release(cls) -> None:
        cls.held, cls.in_main = False, True
        if cls.pending:
            raise KeyboardInterrupt


if __name__ == "__main__":
    Stop.install()
try:
    import logging
    import time

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from rulescape.errors import EXIT_CONFIG, ConfigError
    from rulescape.run.cli import preflight, usage
except KeyboardInterrupt:  # a signal while starting: nothing ran and no run directory exists yet
    print("interrupted while starting; nothing ran", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)

log = logging.getLogger("rulescape")


def record_interrupt(cfg: DictConfig, out_dir: str, started_ns: int) -> None:
    """A run directory exists (Hydra made it) but the run was stopped before training: say so in its
    summary.json, unless a record is there that says more (this run's own, or a finished run's)."""
    from omegaconf import OmegaConf

    from modules.record import build_summary, write_unless_finished
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable value: the config as written
        config = OmegaConf.to_container(cfg, resolve=False)
    summary = build_summary("interrupted", config, {}, 0, (time.time_ns() - started_ns) / 1e9 if started_ns else 0.0,
                            error="interrupted before training started (nothing to resume: run it again)")
    from pathlib import Path
    try:
        write_unless_finished(Path(out_dir) / "summary.json", summary, keep_written_since_ns=started_ns)
    except OSError:
        pass


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    started_ns = time.time_ns()
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        Stop.release()  # a signal held since Hydra began making the run directory lands here
        # after preflight: a refused command line never imports torch
        from rulescape.run.report_line import print_summary
        from rulescape.run.training import STATUS_EXIT, train
        summary = train(cfg, hydra_cfg.runtime.output_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if multirun:  # a bad job must not stop the sweep; its summary.json says "failed"
            return "failed"
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:  # before training (imports, checks, building): one line and a record
        record_interrupt(cfg, hydra_cfg.runtime.output_dir, started_ns)
        print(f"\ninterrupted before training started; record: {hydra_cfg.runtime.output_dir}/summary.json",
              file=sys.stderr, flush=True)
        if multirun:
            return "interrupted"
        sys.exit(EXIT_INTERRUPTED)
    from rulescape.run.training import launched_rank
    if launched_rank():  # a DDP worker: rank 0 prints the run's result
        return summary["status"]
    print_summary(summary, hydra_cfg.runtime.output_dir)
    if not multirun and summary["status"] != "ok":
        sys.exit(STATUS_EXIT[summary["status"]])
    return summary["status"]


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(usage())
        sys.exit(0)
    try:
        from rulescape.config.targets import override_target_problem
        problem = override_target_problem(sys.argv[1:]) or preflight(sys.argv[1:])
        if problem and Stop.received:  # the interrupt surfaced as an error inside Hydra's composition
            raise KeyboardInterrupt
        if problem:
            print(problem, file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        # held while Hydra makes the run directory (a sweep's parent has its launcher's handlers)
        Stop.held = not any(a in ("-m", "--multirun") for a in sys.argv[1:])
        main()
    except KeyboardInterrupt:  # in Hydra's code after main returned (the record is written) or before
        multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
        print("\ninterrupted" if Stop.in_main or multirun else "\ninterrupted while starting; nothing ran",
              file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
