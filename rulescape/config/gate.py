"""The gate: one check of everything a command line makes Hydra build, before Hydra builds anything.

A config is data (rulescape/config/targets.py). But Hydra itself builds objects from config before train.py's own
checks run: in a sweep's parent its callbacks (`hydra.callbacks`), its launcher and sweeper, its logging
(`hydra.job_logging`: handler and formatter classes, a log file's name), and in every job the job's
environment (`hydra.job.env_set`). Those can come from a command line, from an interpolation
(`hydra.callbacks.x=${scheduler}`), from a sweep's job values, from a YAML under `--config-dir` or dropped
into conf/. So `gate(argv)` composes what Hydra will compose, the way Hydra composes it (the same search path,
`--config-dir`, `--config-path`, `--config-name`, `hydra.searchpath`, the sweeper's params and every
job of a sweep), and refuses with one line:

- a `_target_` outside optimizer / scheduler's allow-list (rulescape/config/targets.py), at any depth, also one
  an interpolation or `oc.create` produces;
- a class-naming key (`_target_`, `class`, `()`) whose value is an interpolation;
- a Hydra callback other than rulescape's own (SWEEP_CALLBACKS), a launcher or sweeper other than the ones
  the project documents (LAUNCHERS, SWEEPERS), a launcher key that runs shell commands (COMMAND_KEYS);
- a logging class outside LOGGING_CLASSES, a log file other than Hydra's `<run dir>/<job>.log`;
- environment variables set or copied for the job (`hydra.job.env_set`, `env_copy`: LD_PRELOAD runs code);
- `hydra.output_subdir` outside the run directory; `--experimental-rerun` (Hydra unpickles its file).

Where Hydra cannot compose the command line, the gate says so in one line: nothing is built then either.
The sweep's launcher checks every job's config again with `config_problem` before it starts any job.
"""
from __future__ import annotations

import re
from pathlib import Path

from rulescape.errors import ConfigError, one_line

ROOT = Path(__file__).resolve().parents[2]
SWEEP_CALLBACKS = ("rulescape.sweep.sweep_summary.SweepSummary",)
LAUNCHERS = ("hydra_plugins.rulescape_launcher.JobLauncher",
             "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
             "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
             "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
             "hydra._internal.core_plugins.basic_launcher.BasicLauncher")
SWEEPERS = ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",)
# launcher keys whose values become shell commands or program options that run programs (submitit/SLURM)
COMMAND_KEYS = ("setup", "srun_args")
COMMAND_SBATCH = ("wrap", "prolog", "epilog", "task_prolog", "task_epilog", "export", "container")
LOGGING_CLASSES = ("logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter",
                   "colorlog.ColoredFormatter")
LOG_FILE = "${hydra.runtime.output_dir}/${hydra.job.name}.log"  # Hydra's own job log
LOG_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
CLASS_KEYS = ("_target_", "class", "()")
REFUSED_FLAGS = ("--experimental-rerun",)
# the classes the shipped conf/optimizer and conf/scheduler name (in targets.allowed_targets, tested): a config
# naming only these is checked without importing torch (a sweep's parent imports it later, if at all)
SHIPPED_TARGETS = ("torch.optim.SGD", "torch.optim.Adam", "torch.optim.lr_scheduler.StepLR",
                   "modules.lr_over_rho.over_rho")
PLAIN_VALUE = re.compile(r"^[\w.+\-:/ ]*$")  # a scalar with nothing Hydra would interpret


class Unresolved(str):
    """A value whose interpolation cannot be resolved here (kept as written)."""


def resolved(node):
    """node as plain containers, each interpolation resolved where it can be (Unresolved where not)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - resolve node by node below
        pass
    if isinstance(node, DictConfig):
        items = list(node.keys())
    elif isinstance(node, ListConfig):
        items = list(range(len(node)))
    else:
        return node
    out = {} if isinstance(node, DictConfig) else []
    for key in items:
        try:
            value = resolved(node[key])
        except Exception:  # noqa: BLE001 - an interpolation only Hydra's job can resolve
            raw = OmegaConf.to_container(node, resolve=False)
            value = Unresolved(str(raw[key]))
        if isinstance(out, dict):
            out[key] = value
        else:
            out.append(value)
    return out


def walk(node, prefix: str = ""):
    """(dotted path, key, value) for every entry of a plain config."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            yield path, key, value
            yield from walk(value, path + ".")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{prefix}{i}.")


def refuse(path: str, value, allowed: str) -> ConfigError:
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return ConfigError(f"{path}={shown} is refused: {allowed} (a config is data; docs/reliability.md)")


def check_hydra(hydra: dict) -> None:
    """Raise ConfigError unless everything Hydra itself builds from this `hydra` node is the project's own."""
    callbacks = hydra.get("callbacks") or {}
    if not isinstance(callbacks, dict):
        raise refuse("hydra.callbacks", callbacks, "only rulescape's sweep_summary may be a Hydra callback")
    for name, node in callbacks.items():
        if not (isinstance(node, dict) and set(node) == {"_target_"} and node["_target_"] in SWEEP_CALLBACKS):
            raise refuse(f"hydra.callbacks.{name}", node.get("_target_", node) if isinstance(node, dict) else node,
                         f"a Hydra callback may only be {', '.join(SWEEP_CALLBACKS)}")
    for part, allowed in (("launcher", LAUNCHERS), ("sweeper", SWEEPERS)):
        node = hydra.get(part) or {}
        target = node.get("_target_") if isinstance(node, dict) else node
        if target not in allowed:
            raise refuse(f"hydra.{part}._target_", target, f"choose one of {', '.join(allowed)}")
        for path, key, value in walk(node, f"hydra.{part}."):
            if key in CLASS_KEYS and path != f"hydra.{part}._target_":
                raise refuse(path, value, f"hydra.{part} names one class, at its top")
    launcher = hydra.get("launcher") or {}
    if launcher.get("_target_") == LAUNCHERS[0]:  # rulescape's own: its values, before Hydra builds it
        check_rulescape_launcher(launcher)
    for key in COMMAND_KEYS:
        if launcher.get(key):
            raise refuse(f"hydra.launcher.{key}", launcher[key], "a launcher key that runs commands must stay "
                         "unset (put what a job needs into its environment before you start the sweep)")
    extra = launcher.get("additional_parameters") or {}
    for key in extra if isinstance(extra, dict) else ():
        if str(key).lower() in COMMAND_SBATCH:
            raise refuse(f"hydra.launcher.additional_parameters.{key}", extra[key],
                         f"these sbatch options run programs or set their environment: {', '.join(COMMAND_SBATCH)}")
    for part in ("job_logging", "hydra_logging"):
        for path, key, value in walk(hydra.get(part) or {}, f"hydra.{part}."):
            if key in CLASS_KEYS and value not in LOGGING_CLASSES:
                raise refuse(path, value, f"a logging class may be one of {', '.join(LOGGING_CLASSES)}")
            if key == "filename" and value != LOG_FILE:
                raise refuse(path, value, f"the log file is Hydra's {LOG_FILE}")
            if key == "stream" and value not in LOG_STREAMS:
                raise refuse(path, value, f"a log stream is one of {', '.join(LOG_STREAMS)}")
    job = hydra.get("job") or {}
    for key in ("env_set", "env_copy"):
        if job.get(key):
            raise refuse(f"hydra.job.{key}", job[key], "a job's environment comes from the shell that starts it")
    subdir = hydra.get("output_subdir")
    if subdir is not None and (Path(str(subdir)).is_absolute() or ".." in Path(str(subdir)).parts):
        raise refuse("hydra.output_subdir", subdir, "a relative path inside the run directory (or null)")


def check_rulescape_launcher(launcher: dict) -> None:
    """hydra/launcher=rulescape's keys (conf/hydra/launcher/rulescape.yaml): n_jobs an integer, stop_grace_s
    a finite number >= 0, skip_finished and preload true or false."""
    import math
    n_jobs, grace = launcher.get("n_jobs", 2), launcher.get("stop_grace_s", 300)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs!r} is not allowed; an integer (jobs at a time; <= 0: one "
                          "per CPU core)")
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not math.isfinite(grace) or grace < 0:
        raise ConfigError(f"hydra.launcher.stop_grace_s={grace!r} is not allowed; a finite number of seconds >= 0")
    for key in ("skip_finished", "preload"):
        if not isinstance(launcher.get(key, True), bool):
            raise ConfigError(f"hydra.launcher.{key}={launcher[key]!r} is not allowed; true or false")


def config_problem(cfg, where: str = "config") -> str | None:
    """The error line for a composed config (hydra node included, if it has one) that would make Hydra or
    the run build something outside the allow-list; None when it is clean."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from rulescape.config.targets import INSTANTIATED, check_targets, target_paths
    raw = OmegaConf.to_container(cfg, resolve=False)
    for path, key, value in walk(raw):
        if key in CLASS_KEYS and isinstance(value, str) and "${" in value:
            return f"error: {where}: {path}={value!r} is refused: a class is named literally, never by interpolation"
    instance = HydraConfig.instance()
    before = instance.cfg
    try:
        if "hydra" in cfg:
            instance.set_config(cfg)  # ${hydra:...} resolves as it will in the run
        plain = resolved(cfg)
    except Exception:  # noqa: BLE001 - set_config refuses a malformed hydra node: checked unresolved
        plain = raw
    finally:
        instance.cfg = before
    try:
        hydra = plain.pop("hydra", None) if isinstance(plain, dict) else None
        if not all(path in INSTANTIATED and target in SHIPPED_TARGETS for path, target in target_paths(plain)):
            check_targets(plain, where)
        if hydra is not None:
            check_hydra(hydra)
    except ConfigError as err:
        return f"error: {err}"
    return None


def plain_override(text: str, master) -> bool:
    """Whether a job's override only sets a scalar at a key that names no class, no config group and nothing
    of Hydra's: jobs that differ only in such overrides build the same classes (one of them is composed)."""
    key, _, value = text.partition("=")
    key = key.lstrip("+~")
    if key.startswith("hydra") or "/" in key or key.rsplit(".", 1)[-1] in CLASS_KEYS or "_target_" in value:
        return False
    if "." not in key:  # a top-level key: a value only if the config has it as one (else a group choice)
        from omegaconf import OmegaConf
        if key not in master or OmegaConf.is_config(master[key]):
            return False
    return bool(PLAIN_VALUE.match(value))


def compose(argv: list[str]):
    """(config, [each distinct job's config]) as Hydra composes them for this command line; jobs only for a
    sweep. Raises what Hydra raises when it cannot compose."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.singleton import Singleton
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    args = get_args_parser().parse_args(argv)
    search_path = create_automatic_config_search_path(str(ROOT / "train.py"), None, args.config_path or "conf")
    if args.config_dir is not None:
        config_dir = Path(args.config_dir).absolute()
        if not config_dir.is_dir():
            raise ConfigError(f"--config-dir {args.config_dir}: no such directory")
        search_path.prepend(provider="command-line", path=f"file://{config_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    config_name = args.config_name or "config"
    state = Singleton.get_state()
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        multirun = args.multirun or hydra.get_mode(config_name=config_name, overrides=args.overrides) \
            == RunMode.MULTIRUN
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        cfg = hydra.compose_config(config_name=config_name, overrides=args.overrides, run_mode=mode,
                                   with_log_configuration=False)
        if not multirun:
            return cfg, []
        params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False) or {}
        task = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)
        parser = OverridesParser.create(config_loader=hydra.config_loader)
        parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(task))
        jobs, seen = [], set()
        for batch in BasicSweeper.split_arguments(parsed, None):
            for overrides in batch:
                signature = tuple(o for o in overrides if not plain_override(o, cfg))
                if signature in seen:
                    continue
                seen.add(signature)
                jobs.append(hydra.config_loader.load_sweep_config(cfg, list(overrides)))
        return cfg, jobs
    finally:
        GlobalHydra.instance().clear()
        Singleton.set_state(state)


def gate(argv: list[str]) -> str | None:
    """The error line for a command line that would make Hydra or the run build anything outside the
    allow-list (see the module's docstring), or that Hydra cannot compose; None when it may run."""
    for arg in argv:
        if arg.split("=", 1)[0] in REFUSED_FLAGS:
            return f"error: {arg.split('=', 1)[0]} is refused: Hydra would unpickle its file (pickles run code)"
    try:
        cfg, jobs = compose(argv)
    except ConfigError as err:
        return f"error: {err}"
    except SystemExit:  # argparse: Hydra's own message was printed
        return "error: cannot read the command line (see above)"
    except Exception as err:  # noqa: BLE001 - every Hydra error becomes one line
        return f"error: cannot compose the config: {one_line(str(err))}"
    problem = config_problem(cfg)
    for job in jobs:
        if problem:
            break
        overrides = " ".join(str(o) for o in job.hydra.overrides.task)
        problem = config_problem(job, f"sweep job ({overrides})")
    return problem
