#!/usr/bin/env bash
# Regenerate every committed study report from its committed records (what tests/test_study_report.py checks:
# the subset in the fast suite, the rest under -m slow), then the generated blocks of docs/study/README.md and docs/study/v2/README.md.
# Records never change here; only the analysis does. ~10 min on an idle 2-core CPU.
#   bash tools/regenerate_reports.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
# the third edition's folders (whichever of its pieces ran), then the second's and the first's
for runs in docs/study/*/runs docs/study/v2/*/runs docs/study/v1/*/runs; do
  [ -d "$runs" ] || continue
  $PY report.py "$runs" --out "$(dirname "$runs")" > /dev/null
done
$PY report.py docs/study/pilot-dose-response/records/grid --out docs/study/pilot-dose-response > /dev/null
$PY report.py docs/study/{dms,seqmnist,pattern,neurogym}/runs --out docs/study/all --no-figures > /dev/null
$PY report.py docs/study/v2/{dms,seqmnist,pattern,neurogym}/runs --out docs/study/v2/all --no-figures > /dev/null
$PY report.py docs/study/v1/{dms,seqmnist,pattern}/runs --out docs/study/v1/all --no-figures > /dev/null
$PY report.py tests/data/study_subset/runs --out tests/data/study_subset --no-figures > /dev/null
$PY tools/study_readme.py
echo "regenerated; look at every figure before committing: git status docs/study"
