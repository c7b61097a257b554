"""Plain words that cannot say more than the table: one sentence per claim, generated from its row, and a
checker that finds every such sentence in a text (docs/study/README.md) and compares it with the row it
names.

A sentence reads:  On <task>, “<claim>” is <verdict> — <effect>, p Holm = <p> (<test>, <n>).
"""
from __future__ import annotations

import re

from analysis.verdict import Claim, fmt

SENTENCE = re.compile(r"On (?P<task>[\w.-]+), “(?P<claim>[^”]+)” is (?P<verdict>[^—\n]+?) — ")


def verdict_words(c: Claim) -> str:
    """The verdict without its parenthesised details: "held", "not held: undetectable at this n", ..."""
    return c.verdict.split(" (")[0]


def sentence(c: Claim) -> str:
    if c.not_tested:
        tail = c.not_tested
    elif c.p is not None:
        tail = f"{c.effect}, p Holm = {fmt(c.p_holm)} ({c.test}, {c.n})"
    else:
        tail = c.statistic
    return f"On {c.task}, “{c.claim}” is {verdict_words(c)} — {tail}."


def summary(claims: list[Claim], primary_only: bool = True) -> list[str]:
    """One sentence per (primary) claim, in table order."""
    return [sentence(c) for c in claims if c.primary or not primary_only]


def check(text: str, claims: list[Claim]) -> list[str]:
    """Every sentence of `text` in the generated form whose verdict differs from its claim's row, or whose
    claim has no row: what it says, and what the row says. Empty when the prose matches the table."""
    rows = {(c.task, c.claim): verdict_words(c) for c in claims}
    problems = []
    for m in SENTENCE.finditer(text):
        said = m.group("verdict").strip()
        row = rows.get((m.group("task"), m.group("claim")))
        if row is None:
            problems.append(f"{m.group(0)!r}: no such claim in the table")
        elif said != row:
            problems.append(f"{m.group(0)!r}: the table says {row!r}")
    return problems
