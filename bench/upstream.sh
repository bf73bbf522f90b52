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

# certs-mcp-gateway: the client certificate is signed without any extension (X.509 v1)
g=$dir/gateway
if [ -f "$g/client.key" ] && [ -f "$g/client.crt" ]; then
    :
else
    mkdir -p "$g"
    genkey "$g/client.key"
    openssl req -new -key "$g/client.key" -out "$g/client.csr" \
        -subj "/CN=mcp-gateway-client/O=MCPGateway/OU=Gateway"
    openssl x509 -req -in "$g/client.csr" -CA "$dir/ca/ca.crt" -CAkey "$dir/ca/ca.key" \
        -CAcreateserial -out "$g/client.crt" -days "$days" -sha256 2>/dev/null
    rm "$g/client.csr"
    cp "$dir/ca/ca.crt" "$g/ca.crt"
fi
chmod 600 "$g/client.key"
chmod 644 "$g/client.crt" "$g/ca.crt"

# certs-mcp-plugin PLUGIN_NAME=name, once per plugin
for name in "$@"; do
    p=$dir/plugins/$name
    if [ -f "$p/server.key" ] && [ -f "$p/server.crt" ]; then
        :
    else
        mkdir -p "$p"
        genkey "$p/server.key"
        openssl req -new -key "$p/server.key" -out "$p/server.csr" \
            -subj "/CN=mcp-plugin-$name/O=MCPGateway/OU=Plugins"
        openssl x509 -req -in "$p/server.csr" -CA "$dir/ca/ca.crt" -CAkey "$dir/ca/ca.key" \
            -CAcreateserial -out "$p/server.crt" -days "$days" -sha256 \
            -extfile <(printf 'subjectAltName=DNS:%s,DNS:mcp-plugin-%s,DNS:localhost' "$name" "$name") \
            2>/dev/null
        rm "$p/server.csr"
        cp "$dir/ca/ca.crt" "$p/ca.crt"
    fi
    chmod 600 "$p/server.key"
    chmod 644 "$p/server.crt" "$p/ca.crt"
done
