#!/usr/bin/env bash
# Measures kassa and its anchors in one run on this machine and appends both to
# benches/RESULTS.md: `benches/record.sh` (add --quick to prove it runs in seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
results=benches/RESULTS.md
./target/release/kassa bench all "$@" --append "$results"
# The partner goal is set at a million payments.
if [ "${1:-}" != "--quick" ]; then
  ./target/release/kassa bench partner --n 1000000 --append "$results"
fi
if command -v pgbench >/dev/null && command -v redis-server >/dev/null && command -v sqlite3 >/dev/null; then
  {
    echo
    echo "Anchors of the same run (benches/anchors.sh):"
    echo
    benches/anchors.sh 20 | sed 's/^/    /'
  } >> "$results"
else
  echo "anchors skipped: install postgresql, redis-server and sqlite3 to measure them" >&2
fi
