#!/usr/bin/env bash
# Benchmark tool (a): the upstream Makefile's certificate recipe (certs-mcp-ca, certs-mcp-gateway,
# certs-mcp-plugin per plugin) as one plain shell script, written for this benchmark.
#
#   bench/upstream.sh PKI_DIR KEY_TYPE DAYS NAME...
#
# KEY_TYPE: rsa (upstream: openssl genrsa 4096) or ecdsa (same sequence with P-256 keys from
# openssl genpkey). Each step is skipped when its files exist, exactly like upstream: so the second
# run is trivially fast, but it is NOT content-idempotent (nothing is checked: a wrong, expired or
# foreign-signed certificate is kept as long as the file exists).
# Differences from running `make certs-mcp-all`: no make / python-yaml start-up per plugin (upstream
# re-invokes make for every plugin), no echo output. Subjects follow the team contract.
set -euo pipefail

dir=$1 key_type=$2 days=$3
shift 3

genkey() { # genkey OUT
    if [ "$key_type" = rsa ]; then
        openssl genrsa -out "$1" 4096 2>/dev/null
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
    fi
}

# certs-mcp-ca
if [ -f "$dir/ca/ca.key" ] && [ -f "$dir/ca/ca.crt" ]; then
    :
else
    mkdir -p "$dir/ca"
    genkey "$dir/ca/ca.key"
    openssl req -new -x509 -key "$dir/ca/ca.key" -out "$dir/ca/ca.crt" -days "$days" \
        -subj "/CN=ContextForge-CA/O=ContextForge/OU=Plugins"
    echo "01" > "$dir/ca/ca.srl"
fi
chmod 600 "$dir/ca/ca.key"
chmod 644 "$dir/ca/ca.crt"

# The Makefile's leaf recipe, as in certs-mcp-gateway and certs-mcp-plugin: skip when the files exist,
# else key + CSR + CA signature (extensions only from EXTFILE: none at all for the gateway, so X.509 v1).
# leaf DIR STEM SUBJECT [EXTFILE-CONTENT]
leaf() {
    local d=$1 stem=$2 subj=$3 ext=${4:-} extargs=()
    if [ ! -f "$d/$stem.key" ] || [ ! -f "$d/$stem.crt" ]; then
        mkdir -p "$d"
        genkey "$d/$stem.key"
        openssl req -new -key "$d/$stem.key" -out "$d/$stem.csr" -subj "$subj"
        if [ -n "$ext" ]; then
            printf '%s' "$ext" > "$d/$stem.ext"
            extargs=(-extfile "$d/$stem.ext")
        fi
        openssl x509 -req -in "$d/$stem.csr" -CA "$dir/ca/ca.crt" -CAkey "$dir/ca/ca.key" \
            -CAcreateserial -out "$d/$stem.crt" -days "$days" -sha256 \
            "${extargs[@]}" 2>/dev/null
        rm -f "$d/$stem.csr" "$d/$stem.ext"
        cp "$dir/ca/ca.crt" "$d/ca.crt"
    fi
    chmod 600 "$d/$stem.key"
    chmod 644 "$d/$stem.crt" "$d/ca.crt"
}

# certs-mcp-gateway: the client certificate is signed without any extension (X.509 v1)
leaf "$dir/gateway" client "/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway"

# certs-mcp-plugin PLUGIN_NAME=name, once per plugin
for name in "$@"; do
    leaf "$dir/plugins/$name" server "/CN=mcp-plugin-$name/O=MCPGateway/OU=Plugins" \
        "subjectAltName=DNS:$name,DNS:mcp-plugin-$name,DNS:localhost"
done
