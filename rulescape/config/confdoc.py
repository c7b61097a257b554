"""The conf/ tree read for people: each group's options, what each option file says about itself (its first
comment line) and each key's help (the comment beside it). Read by `train.py --help` (rulescape/run/cli.py) and
tools/gen_config_docs.py (docs/configuration.md), so that help is written once, beside the default."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def groups() -> dict[str, list[str]]:
    """{group: its options}, every directory under conf/ but conf/hydra/ (it extends Hydra's own groups: the
    sweep launcher), which is no group of the run's config."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONF_DIR.iterdir())
            if d.is_dir() and d.name != "hydra"}


def default_options() -> dict[str, str]:
    """{group: option} from conf/config.yaml's defaults list (groups defaulting to null left out)."""
    out = {}
    for entry in OmegaConf.load(CONF_DIR / "config.yaml").defaults:
        if hasattr(entry, "items"):
            for group, option in entry.items():
                if option is not None and not group.startswith("override"):
                    out[group] = str(option)
    return out


def summary(path: Path) -> str:
    """What an option file says about itself: its first block of whole-line comments (package directives
    left out), joined; '' when it has none."""
    block: list[str] = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and "@package" not in text and not line.startswith(" "):
            block.append(text.lstrip("#").strip())
        elif block:
            break
    return " ".join(block)


KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w]*):(.*)$")


def key_help(path: Path) -> dict[str, str]:
    """{dotted key: its comment} for every key of a YAML file; a comment continued on the next lines
    (comment-only lines indented past the key) is joined."""
    out, stack, last = {}, [], None
    for line in path.read_text().splitlines():
        match = KEY_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            indent, name, rest = len(match.group(1)), match.group(2), match.group(3)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            dotted = ".".join([*(n for _, n in stack), name])
            stack.append((indent, name))
            comment = rest.split(" #", 1)[1].strip() if " #" in rest else ""
            out[dotted], last = comment, (dotted, indent)
        elif line.strip().startswith("#") and last and len(line) - len(line.lstrip()) > last[1] and out[last[0]]:
            out[last[0]] += " " + line.strip().lstrip("# ").strip()
        else:
            last = None
    return out
