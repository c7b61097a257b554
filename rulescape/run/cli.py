"""The command line before Hydra sees it: `usage` (train.py --help) and `preflight`, the checks that happen
before Hydra creates a run directory. First the gate (rulescape/config/gate.py: nothing Hydra or the run would
build may lie outside the allow-list, whatever file, interpolation or sweep value it comes from); then an
unknown option of a config group (`rule=foo`), an unknown key, a malformed override, an unwritable, full or
over-long run directory and (for a single run) every value get one line instead of Hydra's multi-line error
or a traceback."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from rulescape.errors import one_line

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MAIN_KEYS = ("seed", "model.hidden_size", "model.dale", "optimizer.lr", "trainer.max_steps", "l2", "eval_every",
             "curvature.every_n_steps", "alignment.every_n_steps", "stop_at_train_acc", "ckpt_path", "threads")
EXAMPLES = ("python train.py rule=rflo task=dms                        # one run, ~30 s",
            "python train.py experiment=smoke rule=eprop logger=csv    # every moving part at toy size, ~10 s",
            "python train.py -m rule=bptt,eprop seed=0,1 experiment=smoke   # a 4-job sweep, 2 at a time")


def usage() -> str:
    """train.py --help: usage, the groups with their options (the default marked *), main keys, examples."""
    from omegaconf import OmegaConf
    from rulescape.config.confdoc import default_options, groups, key_help
    defaults = default_options()
    lines = ["usage: python train.py [group=option ...] [key=value ...]        one run",
             "       python train.py -m [group=a,b ...] [key=a,b ...]           a sweep (every combination)",
             "", "groups (group=option; * the default):"]
    for group, options in groups().items():
        lines.append(f"  {group + '=':<12}" + ", ".join(o + ("*" if defaults.get(group) == o else "")
                                                      for o in options))
    from modules.rules import RULES
    learners = sorted(name for name, cls in RULES.items() if getattr(cls, "learns", False))
    if learners:  # rules that own parameters trained by their own objective (modules/rules/base.py)
        lines.append(f"  rules that learn their own credit pathway ({len(learners)}; own parameters trained with "
                     f"rule.lr, rule.optimizer): {', '.join(learners)}")
    lines += ["", "main keys (key=default; every key with its type, range and help: docs/configuration.md):"]
    for name in MAIN_KEYS:
        group, _, rest = name.partition(".")
        path = CONF_DIR / group / f"{defaults[group]}.yaml" if rest and group in defaults else CONF_DIR / "config.yaml"
        dotted = rest if path.parent.name == group else name
        value = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"  {name + '=' + shown:<34} "
                     f"{key_help(path).get(dotted, '')}".rstrip())
    return "\n".join(lines + ["", "examples:", *("  " + e for e in EXAMPLES), "",
                              "exit codes: 0 ok, 1 failed, 2 bad command line or config, 3 diverged, 130 interrupted.",
                              "More: README.md, docs/. Hydra's own flags: --hydra-help, --cfg job, --info."])


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_overrides(argv: list[str]) -> str | None:
    """The error line for the first `group=option` override naming an option that does not exist."""
    for arg in argv:
        if "=" not in arg or arg.startswith(("-", "+", "~", "hydra")):
            continue
        key, value = arg.split("=", 1)
        if "." in key or not (CONF_DIR / key).is_dir() or value in ("null", ""):
            continue
        options = group_options(key)
        values = value.split(",") if not value.startswith(("choice(", "range(", "glob(")) else []
        for v in values:
            if v not in options:
                return f"error: unknown {key} '{v}'; choose one of: {', '.join(options)}"
    return None


def check_keys(argv: list[str]) -> str | None:
    """The error line for an override of a key that does not exist (`model.hiden=3`): the keys its section
    has, from the config composed without the dotted overrides. Skipped for multirun sweeps."""
    overrides = [a for a in argv if "=" in a and not a.startswith(("-", "hydra"))]
    dotted = [a.split("=", 1)[0].lstrip("+~") for a in overrides if "." in a.split("=", 1)[0]]
    if "-m" in argv or "--multirun" in argv or not dotted or not compose_problem(overrides)[0]:
        return None
    from omegaconf import OmegaConf
    base = compose_problem([a for a in overrides if "." not in a.split("=", 1)[0]])[1]
    for key in dotted if base is not None else ():  # an undotted override is wrong too: Hydra's line names it
        if OmegaConf.select(base, key, default="__missing__") == "__missing__":
            parent = key.rsplit(".", 1)[0]
            node = OmegaConf.select(base, parent)
            keys = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(no such section)"
            return f"error: unknown config key '{key}'; {parent} has: {keys}"
    return None


UNQUOTED = re.compile(r"^[A-Za-z0-9_\-+./:@%*?|~]+$")  # what Hydra's override grammar reads unquoted


def hydra_quote(value) -> str:
    """value as Hydra's override grammar reads it back unchanged: as is where it may stand unquoted, else in
    single quotes (a non-ASCII or spaced run directory, a quote, an interpolation-like ${...})."""
    text = str(value)
    if UNQUOTED.match(text) and "${" not in text:
        return text
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)  # backslashes before a quote doubled
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)  # and at the end
    return "'" + text.replace("${", "\\${") + "'"


def override(key: str, value) -> str:
    """`key=value` for a shell: Hydra-quoted, then shell-quoted."""
    import shlex
    return shlex.quote(f"{key}={hydra_quote(value)}")


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """A multirun's overrides with every sweep (a,b / range() / choice()) replaced by its first value: the
    config of its first job, to find keys and groups that do not exist before any job starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    out = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), None)
            key = override.get_key_element()
            out.append(f"{key}={first}" if first is not None else override.input_line)
        else:
            out.append(override.input_line)
    return out


def compose_problem(overrides: list[str]):
    """(error line, None) where Hydra cannot compose these overrides, else (None, config with hydra)."""
    from hydra import compose, initialize_config_dir
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return None, compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception as err:  # noqa: BLE001 - every Hydra error becomes one line
        text = str(err)
        if text.startswith("Could not override '"):
            key = text.split("'")[1]
            from rulescape.config.confdoc import groups as config_groups
            groups = sorted(config_groups())
            where = f"groups: {', '.join(groups)}" if "." not in key else "add it with +key=value only if it is new"
            return f"error: unknown config group or key '{key}' ({where})", None
        if text.startswith("Ambiguous value for argument"):
            arg = text.split("'")[1]
            return (f"error: {arg}: a comma list sweeps only with -m (--multirun); for a list write "
                    "key=[a,b], for a string quote it"), None
        return f"error: {bad_override(overrides) or one_line(text)}", None


def bad_override(overrides: list[str]) -> str | None:
    """'cannot read the override ...' for the first override the grammar rejects, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception as err:  # noqa: BLE001 - the grammar's error
            return f"cannot read the override {override!r} ({one_line(str(err))})"
    return None


def path_too_long(name: str, path: Path) -> str | None:
    from rulescape.config.schema import NAME_MAX, PATH_MAX
    longest = max((len(part.encode()) for part in path.parts), default=0)
    if longest > NAME_MAX or len(os.path.abspath(path)) > PATH_MAX:
        return (f"error: {name}={str(path)[:40]}...: too long; a path may have {PATH_MAX} characters and each "
                f"of its parts {NAME_MAX} (its longest part has {longest})")
    return None


def run_dir_problem(hydra_cfg, name: str = "hydra.run.dir") -> str | None:
    """One line when the run (or sweep) directory Hydra will create cannot be created (an unwritable place,
    an over-long path)."""
    from omegaconf import OmegaConf
    try:
        run_dir = Path(OmegaConf.select(hydra_cfg, name))
    except Exception:  # noqa: BLE001 - an interpolation only Hydra's job can resolve: left to train()
        return None
    problem = path_too_long(name, run_dir)
    if problem:
        return problem
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"error: {name}={run_dir}: cannot create it ({existing} is not a directory)"
    try:  # a real attempt: permissions, read-only mounts and root all answer truthfully
        probe = tempfile.mkdtemp(prefix=".rulescape-probe-", dir=existing)
    except OSError as err:
        return f"error: {name}={run_dir}: cannot create it in {existing} ({err.strerror})"
    try:  # room for Hydra's own files (.hydra/*.yaml, its log): a full disk is one line here, not its traceback
        with open(os.path.join(probe, "probe"), "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return f"error: {name}={run_dir}: cannot write files in {existing} ({err.strerror})"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(probe, "probe"))
        with contextlib.suppress(OSError):
            os.rmdir(probe)
    return None


PROBE_BYTES = 64 * 1024  # more than Hydra writes before a run starts (config, hydra, overrides yaml and its log)


OTHER_CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def preflight(argv: list[str], check_values: bool = True) -> str | None:
    """Everything about a command line that can be checked before Hydra creates a run directory: group
    options, keys, the override grammar, the run directory and (for a single run) every value. The error
    line, or None. A multirun checks keys and groups only: a bad value in one job fails that job alone
    (its summary.json says so) and the sweep goes on."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    problem = check_group_overrides(argv)
    if problem:
        return problem
    from rulescape.config.gate import gate
    gated = gate(argv)  # everything Hydra would build, composed as Hydra composes it, before it builds any
    if gated and not gated.startswith("error: cannot compose"):
        return gated
    if any(a.split("=")[0] in OTHER_CONFIG_FLAGS for a in argv):
        return gated  # another primary config: Hydra's composition of it is the check
    # overrides only: not Hydra's flags, nor a flag's value (--cfg job, --info defaults)
    overrides = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    if multirun:
        try:
            overrides = first_of_each_sweep(overrides)
        except Exception as err:  # noqa: BLE001 - a grammar error
            return f"error: {bad_override(overrides) or one_line(str(err))}"
    problem, composed = compose_problem(overrides)
    if problem:  # an unknown dotted key: name the keys its section has
        return (None if multirun else check_keys(argv)) or problem
    if gated:  # Hydra cannot compose the command line as given (our first-job composition could)
        return gated
    problem = run_dir_problem(composed, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    if problem:
        return problem
    if check_values and not multirun:
        from omegaconf import OmegaConf, open_dict
        from rulescape.config.schema import check_schema
        from rulescape.config.validate import settle, validate
        from rulescape.errors import ConfigError
        from rulescape.run.checkpoint import check_checkpoint
        from rulescape.run.rundir import check_run_dir
        from hydra.core.hydra_config import HydraConfig
        # ${hydra:...} (a study arm's `${hydra:sweep.dir}/...` globs) resolves here as in Hydra's own job
        HydraConfig.instance().set_config(composed)
        try:
            run_dir = OmegaConf.select(composed, "hydra.run.dir")
        except Exception:  # noqa: BLE001 - resolved by Hydra's job only
            run_dir = None
        with open_dict(composed):
            del composed["hydra"]
        try:
            from modules.rules import registry_problem
            # a duplicate name, a clash with the base class, or a rule file that failed to import: its file(s)
            problem = registry_problem(OmegaConf.select(composed, "rule.name", default=None))
            if problem:
                return f"error: {problem}"
            cfg = check_schema(composed)
            validate(cfg)
            settle(cfg)
            # before Hydra writes <run dir>/.hydra: a finished run's directory and checkpoint stay as they were
            if run_dir is not None and Path(run_dir).is_dir():
                check_run_dir(Path(run_dir), cfg.ckpt_path)
            check_checkpoint(cfg.ckpt_path, OmegaConf.to_container(cfg, resolve=True))
        except ConfigError as err:
            return f"error: {err}"
    return None
