"""docs/configuration.md cannot go stale: it is tools/gen_config_docs.py's output from conf/ and the schema, it
names every option file under conf/, and a key a YAML adds without a dataclass field still gets its row."""
from __future__ import annotations

import importlib.util
import re
import shutil

from conftest import ROOT

from rulescape.config import confdoc


def generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "tools" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_configuration_md_is_the_generated_one():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == generator().render(), "docs/configuration.md is stale: run python tools/gen_config_docs.py"


def test_every_option_file_and_every_key_is_named():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for path in sorted((ROOT / "conf").glob("*/*.yaml")):
        rel = path.relative_to(ROOT).as_posix()
        assert f"(../{rel})" in text, f"{rel} is not in docs/configuration.md"
    for group in ("task", "rule", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"):
        for option in confdoc.groups()[group]:
            path = ROOT / "conf" / group / f"{option}.yaml"
            section = text.split(f"### `{group}={option}`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
            for key in confdoc.key_help(path):
                if key != "defaults" and not key.startswith("defaults."):
                    assert f"`{group}.{key}`" in section or f"`{group}.{key}." in section, (group, option, key)
    assert "rulescape/config/schema.py" in text and "rulescape/config/validate.py" in text  # where declarations live


def test_a_yaml_key_without_a_dataclass_field_is_listed_untyped_with_its_comment(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    with open(conf / "rule" / "eprop.yaml", "a") as f:
        f.write("e_ratio_target: 0.5   # a key some other change adds\n")
    gen = generator()
    monkeypatch.setattr(gen, "CONF", conf)
    monkeypatch.setattr(confdoc, "CONF_DIR", conf)
    text = gen.render()
    row = next(line for line in text.splitlines() if "`rule.e_ratio_target`" in line)
    assert re.search(r"`0\.5` \| untyped \| .* \| a key some other change adds \|", row), row


def test_key_help_reads_comments_and_their_continuations(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1   # first\nb:\n  c: 2  # nested, continued\n        # on the next line\n"
                    "d: 3\n# a comment of its own\ne: '#not a comment'\n")
    assert confdoc.key_help(path) == {"a": "first", "b": "", "b.c": "nested, continued on the next line",
                                      "d": "", "e": ""}
