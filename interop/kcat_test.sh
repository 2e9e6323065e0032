#!/usr/bin/env bash
# kcat against Ferry: keyed produce, consume from beginning, metadata listing.
set -euo pipefail
: "${BOOTSTRAP:?set BOOTSTRAP=host:port}"
topic="kcat-$RANDOM$RANDOM"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
kdebug=(); [[ -n "${KCAT_DEBUG:-}" ]] && kdebug=(-d "$KCAT_DEBUG")

for i in $(seq 1 200); do echo "key$((i % 5)):value-$i"; done >"$tmp/in"

echo "[kcat] produce 200 keyed lines to $topic"
kcat "${kdebug[@]}" -P -b "$BOOTSTRAP" -t "$topic" -K: -X acks=all <"$tmp/in"

echo "[kcat] consume from beginning"
kcat "${kdebug[@]}" -C -b "$BOOTSTRAP" -t "$topic" -o beginning -e -q -f '%k:%s\n' >"$tmp/out"
# Several partitions would interleave keys, so compare as sets and per key in order.
if ! diff <(sort "$tmp/in") <(sort "$tmp/out") >/dev/null; then
    echo "[kcat] FAIL: consumed lines differ from produced (got $(wc -l <"$tmp/out") lines)" >&2
    diff <(sort "$tmp/in") <(sort "$tmp/out") | head >&2; exit 1
fi
for k in 0 1 2 3 4; do
    if ! diff <(grep "^key$k:" "$tmp/in") <(grep "^key$k:" "$tmp/out") >/dev/null; then
        echo "[kcat] FAIL: per-key order differs for key$k" >&2; exit 1
    fi
done

echo "[kcat] metadata listing"
kcat "${kdebug[@]}" -L -b "$BOOTSTRAP" -t "$topic" >"$tmp/meta"
cat "$tmp/meta"
grep -q "topic \"$topic\" with [1-9][0-9]* partitions" "$tmp/meta" \
    || { echo "[kcat] FAIL: topic not in metadata listing" >&2; exit 1; }
grep -q "broker .* at 127.0.0.1:" "$tmp/meta" \
    || { echo "[kcat] FAIL: no broker in metadata listing" >&2; exit 1; }
echo "[kcat] OK"
