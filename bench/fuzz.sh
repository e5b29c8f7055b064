#!/usr/bin/env bash
# A long fuzzing run: the CI test (tests/test_fuzz.py) with many more examples and a random
# seed, on SQLite, then on PostgreSQL when CREDIT_HUB_TEST_DATABASE_URL names a database the
# run may wipe. Prints the requests sent, the statuses seen and every distinct failure.
#
#   bench/fuzz.sh                      # 200 examples per operation, caller and mode
#   EXAMPLES=1000 SEED=42 bench/fuzz.sh
#   CREDIT_HUB_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test bench/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CREDIT_HUB_FUZZ_EXAMPLES="${EXAMPLES:-200}"
export CREDIT_HUB_FUZZ_SEED="${SEED:-$RANDOM$RANDOM}"
echo "fuzz: ${CREDIT_HUB_FUZZ_EXAMPLES} examples, seed ${CREDIT_HUB_FUZZ_SEED}"

run() {
  local label=$1
  shift
  local started=$SECONDS
  env "$@" .venv/bin/pytest -q -s -p no:cacheprovider tests/test_fuzz.py
  echo "fuzz ($label): $((SECONDS - started)) s"
}

run sqlite CREDIT_HUB_TEST_DATABASE_URL=
if [[ -n "${CREDIT_HUB_TEST_DATABASE_URL:-}" ]]; then
  run postgresql CREDIT_HUB_TEST_DATABASE_URL="$CREDIT_HUB_TEST_DATABASE_URL"
fi
