#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) on stable Rust (no sanitizer: `-s none`,
# with debug assertions and overflow checks), starting from the committed seeds, and prints
# the executions each target reached and their total. A crash stops the script with the
# target's exit code; libFuzzer leaves the input under fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope identifiers xml_layout json_layout bundle xsd)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
total=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log="$(mktemp)"
  if ! cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed" >&2
    exit 1
  fi
  runs="$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1)"
  echo "fuzz $t: ${runs:-0} executions in ${seconds} s, no crash"
  total=$((total + ${runs:-0}))
  rm -f "$log"
done
echo "fuzz total: $total executions"
