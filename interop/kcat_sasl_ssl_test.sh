#!/usr/bin/env bash
# kcat over SASL_SSL (SCRAM-SHA-512, the broker's certificate checked against
# the interop CA): produce, consume from the beginning, metadata listing that
# advertises the SASL_SSL listener itself. The ACLs for the SASL user are made
# with `ferry acl add` on the plain listener (User:ANONYMOUS is a super user there).
set -euo pipefail
: "${SSL_BOOTSTRAP:?set SSL_BOOTSTRAP=host:port}" "${SSL_CA:?set SSL_CA=ca.pem}" "${FERRY:?set FERRY=path/to/ferry}"
: "${BOOTSTRAP:?}" "${SASL_USER:?}" "${SASL_PASSWORD:?}"
topic="ssl-kcat-$RANDOM$RANDOM"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
tls=(-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512
     -X "sasl.username=$SASL_USER" -X "sasl.password=$SASL_PASSWORD" -X "ssl.ca.location=$SSL_CA")

echo "[kcat-ssl] ACLs for User:$SASL_USER on ssl-* and group ssl-*"
"$FERRY" acl add --brokers "$BOOTSTRAP" --allow-principal "User:$SASL_USER" --operation write,read,describe,create \
    --topic ssl- --resource-pattern-type prefixed >/dev/null
"$FERRY" acl add --brokers "$BOOTSTRAP" --allow-principal "User:$SASL_USER" --operation read \
    --group ssl- --resource-pattern-type prefixed >/dev/null
"$FERRY" topic create "$topic" --brokers "$BOOTSTRAP" >/dev/null

for i in $(seq 1 200); do echo "key$((i % 5)):value-$i-$(head -c 600 /dev/zero | tr '\0' x)"; done >"$tmp/in"
echo "[kcat-ssl] produce 200 keyed lines over SASL_SSL"
kcat "${tls[@]}" -P -b "$SSL_BOOTSTRAP" -t "$topic" -K: -X acks=all <"$tmp/in"

echo "[kcat-ssl] consume from beginning over SASL_SSL"
kcat "${tls[@]}" -C -b "$SSL_BOOTSTRAP" -t "$topic" -o beginning -e -q -f '%k:%s\n' >"$tmp/out"
if ! diff "$tmp/in" "$tmp/out" >/dev/null; then
    echo "[kcat-ssl] FAIL: consumed lines differ (got $(wc -l <"$tmp/out") lines)" >&2; exit 1
fi

echo "[kcat-ssl] metadata listing"
kcat "${tls[@]}" -L -b "$SSL_BOOTSTRAP" -t "$topic" >"$tmp/meta"
cat "$tmp/meta"
grep -q "broker .* at $SSL_BOOTSTRAP" "$tmp/meta" \
    || { echo "[kcat-ssl] FAIL: the SASL_SSL listener is not what is advertised" >&2; exit 1; }

echo "[kcat-ssl] a wrong password fails"
if kcat -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512 -X "sasl.username=$SASL_USER" \
    -X sasl.password=wrong -X "ssl.ca.location=$SSL_CA" -L -b "$SSL_BOOTSTRAP" -m 5 >/dev/null 2>&1; then
    echo "[kcat-ssl] FAIL: a wrong password listed metadata" >&2; exit 1
fi
echo "[kcat-ssl] OK"
