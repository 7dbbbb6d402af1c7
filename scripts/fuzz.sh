#!/usr/bin/env bash
# Runs every libFuzzer target of a HALB_FUZZ build on a copy of its seed corpus, each for a
# bounded time. Crashes are saved under build/fuzz/artifacts/ and fail the run.
# usage: scripts/fuzz.sh BUILD_DIR SECONDS_PER_TARGET
set -euo pipefail
dir=$1
secs=${2:-20}
src=$(cd "$(dirname "$0")/.." && pwd)/tests/fuzz/corpus
mkdir -p "$dir/artifacts" "$dir/corpus-work"
status=0
shopt -s nullglob
for bin in "$dir"/tests/fuzz/fuzz_*; do
  [[ -x $bin && -f $bin ]] || continue
  name=$(basename "$bin")
  name=${name#fuzz_}
  work="$dir/corpus-work/$name"
  mkdir -p "$work"
  [[ -d $src/$name ]] && cp -n "$src/$name"/* "$work"/ 2>/dev/null || true
  echo "fuzz $name: ${secs}s"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
      -artifact_prefix="$dir/artifacts/$name-" "$work" >"$dir/artifacts/$name.log" 2>&1; then
    echo "fuzz $name: FAILED; last lines of $dir/artifacts/$name.log:"
    tail -n 30 "$dir/artifacts/$name.log"
    status=1
  else
    grep -E '^#[0-9]+ *DONE|Done [0-9]+ runs' "$dir/artifacts/$name.log" | tail -n 1 || true
  fi
done
exit $status
