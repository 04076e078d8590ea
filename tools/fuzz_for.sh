#!/bin/bash
# The SQL fuzz suite's long profile for a wall-clock budget: rounds of 2000 examples per property, each round with
# its own Hypothesis seed, until the minutes have passed. Prints each round's result, then a total; exits 1 if any
# round failed (rerun that round's seed with `pytest -x ... --hypothesis-seed=N` to see the example).
#   bash tools/fuzz_for.sh 30
set -u
cd "$(dirname "$0")/.."
budget=$(( ${1:-30} * 60 )); start=$(date +%s); round=0; failed=0
while [ $(( $(date +%s) - start )) -lt "$budget" ]; do
  round=$((round + 1))
  out=$(EDGEDISTILL_FUZZ=long EDGEDISTILL_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q tests/test_fuzz_sql.py \
        -p no:cacheprovider --hypothesis-seed=$round 2>&1 | tail -1)
  echo "round $round (seed $round): $out"
  case "$out" in *failed*|*error*) failed=$((failed + 1));; esac
done
echo "rounds=$round failed_rounds=$failed seconds=$(( $(date +%s) - start ))"
[ "$failed" = 0 ]
