#!/usr/bin/env bash
# Runs every fuzz target (extauthz, internal/dpop, internal/jsonscan) for a short fixed time
# (FUZZTIME, default 10s each), so CI explores beyond the seed corpus on every run. The seed
# corpus itself also runs as plain tests under `go test`. A crash leaves its
# input in <package>/testdata/fuzz/<Target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
targets=(FuzzFindToken FuzzIdentityHeaders FuzzCheck FuzzCompactToken)
for target in "${targets[@]}"; do
  echo "== $target ($FUZZTIME)"
  "$GO" test ./extauthz/ -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel 2
done
for target in FuzzVerify; do echo "== $target ($FUZZTIME)"; "$GO" test ./internal/dpop/ -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel 2; done
for target in FuzzJSONScan FuzzJSONObject; do echo "== $target ($FUZZTIME)"; "$GO" test ./internal/jsonscan/ -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel 2; done
