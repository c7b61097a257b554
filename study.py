"""Study your own rule in one command:

    python study.py rule=<name> [study.tasks=[dms,seqmnist,pattern]] [study.seeds=10] [study.smoke=true]
                    [rule.<key>=<value> ...] [<any train.py override> ...]

Conformance checks (seconds; a failure stops with exit 1), then the rule's arm, its controls and the
baseline arms on each task's study preset (baselines reused from docs/study when they still reproduce on
this code), then report.py; the output directory and the report's path are printed last. Every study.<key>
is in conf/study.yaml; adding a rule: docs/add-a-rule.md. Bad input: one line, exit 2.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    from rulescape.study.runner import main
    sys.exit(main(sys.argv[1:]))
