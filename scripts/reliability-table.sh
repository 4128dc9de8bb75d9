#!/usr/bin/env bash
# Writes the fault table of docs/RELIABILITY.md from the rows `make chaos`
# left in DIR (one `<scenario>.row` per scenario).
#   scripts/reliability-table.sh DIR OUT
set -euo pipefail
dir="$1"
out="$2"
shopt -s nullglob
rows=("$dir"/*.row)
if ((${#rows[@]} == 0)); then
  echo "reliability-table: no rows in $dir (did the chaos tests run?)" >&2
  exit 1
fi
table="$(mktemp)"
{
  echo "<!-- chaos:begin -->"
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores with \`make chaos\` (debug build;"
  echo "each scenario: \`cluster up\` with 3 capture nodes and 2 workers, loadgen with"
  echo "20,000 voters of whom 20% change their vote, at 800 requests/s)."
  echo
  echo "| fault | votes acknowledged | faults injected | client-visible error rate (whole run) | time to recover | mismatches |"
  echo "|-------|-------------------:|----------------:|--------------------------------------:|----------------:|-----------:|"
  cat "${rows[@]}"
  echo "<!-- chaos:end -->"
} >"$table"
if [ -f "$out" ] && grep -q "<!-- chaos:begin -->" "$out"; then
  python3 - "$table" "$out" <<'PY'
import re, sys
table = open(sys.argv[1]).read()
text = open(sys.argv[2]).read()
text = re.sub(r"<!-- chaos:begin -->.*?<!-- chaos:end -->\n?", lambda _: table, text, flags=re.S)
open(sys.argv[2], "w").write(text)
PY
else
  cat "$table" >>"$out"
fi
rm -f "$table"
echo "reliability-table: wrote ${#rows[@]} scenarios to $out"
