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
