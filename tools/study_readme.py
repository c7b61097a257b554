"""docs/study/README.md's generated parts, from the committed reports and sweep logs, so that its tables and
sentences can never say more (or other) than the study computed:

    <!-- generated: claims [<edition>] -->  the primary claims' sentences of every task's report ("In plain words")
    <!-- generated: arms <folder> --> the per-arm table of docs/study/<folder>/report.md (test score beside gap)
    <!-- generated: runs [<edition>] -->    runs per records folder, their statuses, and the sweeps' wall time
    <!-- generated: section <folder> <heading> --> the table of that report section (its lines starting "|")
    <!-- generated: rows <folder> <text> -->       the rows of that report's tables that contain <text>
    <!-- generated: say <folder> <claim>|<claim>|... -->  one sentence per named claim row of that report,
                                      in the row's own words: verdict, effect with its CI, p Holm, test, n
    <!-- generated: matrix <folder> <folder> ... -->  claim × task: every primary claim of those reports, a
                                      column per folder, each cell its row's verdict and effect [CI]
    <!-- generated: rules <folder> <folder> ... -->   rule × task: each rule under test (neither bptt nor
                                      a control of docs/study/plan.yaml) with its Δgap and λ1 ratio against
                                      bptt [CI] (its exploratory or primary rows), mean ρ and learned count
                                      (the per-arm table)
    ...
    <!-- end generated -->

A folder is a path under docs/study (`dms`, `v2/dms`); an edition is a folder of folders (`v2`: the second
edition's, none: the current edition's, docs/study itself). Every page in PAGES is rendered.

The wall time of a folder is the sum over its sweeps (each `launching` line of its runs/launcher.log, to the
last job that ended before the next) of first start to last end: what the 2-core machine took, jobs in
parallel included.

    python tools/study_readme.py            rewrite every page (docs/study/README.md, v2/README.md) in place
    python tools/study_readme.py --check    exit 1, naming the page and block, if a page is not what this writes
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "docs" / "study"
BLOCK = re.compile(r"(<!-- generated: (?P<what>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
ORDER = ["dms", "seqmnist", "pattern", "neurogym"]
PAGES = [STUDY / "README.md", STUDY / "v2" / "README.md"]


def report(folder: str) -> str:
    return (STUDY / folder / "report.md").read_text(encoding="utf-8")


def section(text: str, heading: str) -> list[str]:
    """The lines after the first '### <heading>...' line up to the next heading."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"### {heading}"))
    out = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        out.append(line)
    return out


def claims(edition: str = "") -> list[str]:
    out = []
    for task in [str(Path(edition) / t) for t in ORDER if (STUDY / edition / t / "report.md").is_file()]:
        out += [line for line in section(report(task), "In plain words") if line.startswith("- On ")]
    return out


def claim_table(folder: str) -> list[dict]:
    """The claims table rows of a report, as {header cell: value}."""
    return table(report(folder).splitlines(), "| claim | kind |")


def say(folder: str, claims_text: str) -> list[str]:
    """One sentence per claim named (separated by |), from its row in <folder>/report.md: nothing the row
    does not say. A claim the report does not hold is an error (the README names a row that is not there)."""
    rows = {r["claim"]: r for r in claim_table(folder)}
    task = Path(folder).name  # the folder: seqmnist-a0.2, dms-high and dms-variance say which experiment
    out = []
    for claim in [c.strip() for c in claims_text.split("|") if c.strip()]:
        if claim not in rows:
            raise ValueError(f"docs/study/{folder}/report.md has no claim row '{claim}'")
        r = rows[claim]
        effect = "" if r["effect [95% CI]"] in ("—", "") else f" — {r['effect [95% CI]']}"
        detail = "" if r["p Holm"] in ("n/a", "") else f", p Holm = {r['p Holm']}"
        out.append(f"- On {task} ({r['kind']}), “{claim}”: {r['verdict']}{effect}{detail} ({r['test']}; n: {r['n']}).")
    return out


def table(lines: list[str], first: str) -> list[dict]:
    """The rows of the markdown table whose header line starts with `first`, as {header cell: value}."""
    start = next((i for i, line in enumerate(lines) if line.startswith(first)), None)
    if start is None:
        return []
    split = lambda line: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # noqa: E731
    header = split(lines[start])
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, split(line))))
    return rows


def verdict_cell(row: dict | None) -> str:
    """A claim row in a few words: its verdict (without the parenthesis) and effect [CI]."""
    if row is None:
        return "not run"
    verdict = row["verdict"].split(" (")[0]
    effect = "" if row["effect [95% CI]"] in ("—", "") else f": {row['effect [95% CI]']}"
    return f"{verdict}{effect}"


def matrix(folders: list[str]) -> list[str]:
    """Claim × task: the primary claims of the folders' reports, in the first report's order."""
    present = [f for f in folders if (STUDY / f / "report.md").is_file()]
    rows = {f: {r["claim"]: r for r in claim_table(f)} for f in present}
    claims_in_order = []
    for f in present:
        claims_in_order += [c for c, r in rows[f].items() if r["kind"] == "primary" and c not in claims_in_order]
    out = ["| claim | " + " | ".join(Path(f).name for f in folders) + " |", "|---" * (len(folders) + 1) + "|"]
    for claim in claims_in_order:
        cells = [verdict_cell(rows[f].get(claim)) if f in rows else "not run" for f in folders]
        out.append(f"| {claim} | " + " | ".join(cells) + " |")
    return out


def rules(folders: list[str]) -> list[str]:
    """Rule × task: Δgap and λ1 ratio against bptt (effect [CI] of the rule's claim rows), mean ρ and the
    learned count of the per-arm table, one column group per folder."""
    present = [f for f in folders if (STUDY / f / "report.md").is_file()]
    per_arm = {f: {r["arm"]: r for r in table(section(report(f), "Per arm"), "| arm |")} for f in present}
    claims_of = {f: {r["claim"]: r for r in claim_table(f)} for f in present}
    sys.path.insert(0, str(ROOT))
    from analysis.plan import load_plan
    plan = load_plan()
    names = []
    for f in present:
        for arm in plan.rules(per_arm[f]):
            if f"{arm}: larger gap than bptt" in claims_of[f] and arm not in names:
                names.append(arm)
    out = ["| rule | task | Δgap vs bptt [95% CI] | final λ1 ratio to bptt [95% CI] | mean ρ | learned (all runs) |",
           "|---|---|---|---|---|---|"]
    for arm in names:
        for f in present:
            a = per_arm[f].get(arm)
            if a is None:
                continue
            gap = claims_of[f].get(f"{arm}: larger gap than bptt")
            lam = claims_of[f].get(f"{arm}: higher final λ1 than bptt")
            effect = lambda r: "—" if r is None else r["effect [95% CI]"]  # noqa: E731
            out.append(f"| {arm} | {Path(f).name} | {effect(gap)} | {effect(lam)} | {a.get('mean ρ', '—')} | "
                       f"{a.get('learned (all runs)', '—')} |")
    return out


def arms(folder: str) -> list[str]:
    return [line for line in section(report(folder), "Per arm") if line.startswith("|")]


def sweeps_wall_s(log: Path) -> float:
    """Sum over the sweeps logged in launcher.log of (last job end - launch)."""
    total, start, end = 0.0, None, None
    for line in log.read_text().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)", line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        if m.group(2).startswith("launching "):
            if start is not None and end is not None:
                total += end - start
            start, end = t, None
        elif " ended: " in m.group(2):
            end = t
    if start is not None and end is not None:
        total += end - start
    return total


def runs(edition: str = "") -> list[str]:
    rows = ["| records | runs | ok | diverged | failed | interrupted | sweeps' wall time |", "|---|---|---|---|---|---|---|"]
    total_runs, total_s = 0, 0.0
    for folder in sorted(p.parent for p in (STUDY / edition).glob("*/runs") if p.is_dir()):
        statuses = Counter(json.loads(p.read_text()).get("status") for p in (folder / "runs").glob("*/summary.json"))
        log = folder / "runs" / "launcher.log"
        wall = sweeps_wall_s(log) if log.is_file() else 0.0
        n = sum(statuses.values())
        total_runs, total_s = total_runs + n, total_s + wall
        rows.append(f"| [{folder.name}]({folder.name}/report.md) | {n} | {statuses['ok']} | {statuses['diverged']} | "
                    f"{statuses['failed']} | {statuses['interrupted']} | {wall / 60:.1f} min |")
    rows.append(f"| all | {total_runs} | | | | | {total_s / 60:.1f} min |")
    return rows


def generate(what: str) -> list[str]:
    kind, _, arg = what.partition(" ")
    if kind == "claims":
        return claims(arg.strip())
    if kind == "arms":
        return arms(arg)
    if kind == "runs":
        return runs(arg.strip())
    if kind == "section":
        folder, _, heading = arg.partition(" ")
        return [line for line in section(report(folder), heading) if line.startswith("|")]
    if kind == "matrix":
        return matrix(arg.split())
    if kind == "rules":
        return rules(arg.split())
    if kind == "say":
        folder, _, text = arg.partition(" ")
        return say(folder, text)
    if kind == "rows":
        folder, _, text = arg.partition(" ")
        lines = report(folder).splitlines()
        header = next((i for i, line in enumerate(lines) if line.startswith("| claim |")), None)
        rows = [line for line in lines if line.startswith("|") and text in line]
        return ([lines[header], lines[header + 1]] if header is not None else []) + rows
    raise ValueError(f"unknown generated block '{what}'; choose one of: claims [<edition>], arms <folder>, "
                     "runs [<edition>], "
                     "section <folder> <heading>, rows <folder> <text>, say <folder> <claim>|<claim>..., "
                     "matrix <folder>..., rules <folder>...")


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + "".join(f"{line}\n" for line in generate(m.group("what")))
                     + m.group(4), text)


def main(argv: list[str]) -> int:
    stale_pages = 0
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if "--check" not in argv:
            path.write_text(new, encoding="utf-8")
        elif new != text:
            stale = [m.group("what") for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new))
                     if m.group(0) != n.group(0)]
            print(f"{path.relative_to(ROOT)} is stale in block(s) {stale}: run python tools/study_readme.py")
            stale_pages += 1
    return 1 if stale_pages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
