#!/usr/bin/env bash
# Run every fuzz target for SECONDS each with memory limits, growing the corpus.
# Usage: fuzz/run-all.sh [SECONDS]   (default 30; 600 with CAIRN_STRESS=1, the long tier)
set -euo pipefail
cd "$(dirname "$0")"
if [ -n "${CAIRN_STRESS:-}" ]; then default=600; else default=30; fi
seconds=${1:-$default}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
summary=""
for target in $(cargo fuzz list); do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "corpus/$target"
  out=$(mktemp)
  set +e
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=1048576 -print_final_stats=1 \
    >"$out" 2>&1
  status=$?
  set -e
  grep -E "^(stat::number_of_executed_units|Done)|==[0-9]+==|SUMMARY|panicked" "$out" || true
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$out")
  summary="$summary$target: ${execs:-0} executions\n"
  if [ "$status" -ne 0 ]; then
    tail -40 "$out"
    echo "fuzz target $target failed (exit $status)" >&2
    exit 1
  fi
done
printf "== fuzz summary (%ss per target)\n%b" "$seconds" "$summary"
