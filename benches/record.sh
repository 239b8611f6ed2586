#!/usr/bin/env bash
# Measures kassa and its anchors in one run on this machine and appends both to
# benches/RESULTS.md: `benches/record.sh` (add --quick to prove it runs in seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
results=benches/RESULTS.md
# On a virtual machine the host may take CPU time from it ("steal"); how much it took during the
# run is recorded with the figures, since it moves them.
cpu_times() { awk '/^cpu /{ print $2+$3+$4+$5+$6+$7+$8+$9, $9 }' /proc/stat 2>/dev/null || echo "0 0"; }
have_anchors() { command -v pgbench >/dev/null && command -v redis-server >/dev/null && command -v sqlite3 >/dev/null; }
# The anchors are measured before kassa's scenarios and again after them: the host's disk and CPU
# move within minutes, and two readings show by how much.
anchors() { benches/anchors.sh 20 | sed 's/^/    /'; }
read -r total_before steal_before < <(cpu_times)
anchors_before=""
if have_anchors; then anchors_before=$(anchors); fi
./target/release/kassa bench all "$@" --append "$results"
# The partner goal is set at a million payments.
if [ "${1:-}" != "--quick" ]; then
  ./target/release/kassa bench partner --n 1000000 --append "$results"
fi
if have_anchors; then
  anchors_after=$(anchors)
  {
    echo
    echo "Anchors of the same run (benches/anchors.sh), before kassa's scenarios:"
    echo
    echo "$anchors_before"
    echo
    echo "and after them:"
    echo
    echo "$anchors_after"
  } >> "$results"
else
  echo "anchors skipped: install postgresql, redis-server and sqlite3 to measure them" >&2
fi
read -r total_after steal_after < <(cpu_times)
if [ "$total_after" -gt "$total_before" ]; then
  steal=$(( 100 * (steal_after - steal_before) / (total_after - total_before) ))
  printf '\nCPU time taken by the host during the run (steal): %s%%\n' "$steal" >> "$results"
fi
