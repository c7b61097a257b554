"""Command-line checks that must happen before Hydra composes anything: an unknown option of a config
group (`rule=foo`) gets one line naming the valid options instead of Hydra's multi-line error."""
from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


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
    """The error line for an override of a key that does not exist (`model.hiden=3`), found by composing
    the config once before Hydra does. Skipped for multirun sweeps (their values are lists)."""
    if any(a in ("-m", "--multirun") for a in argv):
        return None
    overrides = [a for a in argv if "=" in a and not a.startswith(("-", "hydra"))]
    dotted = [a.split("=", 1)[0].lstrip("+~") for a in overrides if "." in a.split("=", 1)[0]]
    if not dotted:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except HydraException:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            base = compose(config_name="config", overrides=[a for a in overrides if "." not in a.split("=", 1)[0]])
        for key in dotted:
            if OmegaConf.select(base, key, default="__missing__") == "__missing__":
                parent = key.rsplit(".", 1)[0]
                node = OmegaConf.select(base, parent)
                keys = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(no such section)"
                return f"error: unknown config key '{key}'; {parent} has: {keys}"
        return None  # let Hydra report what it found
    return None
