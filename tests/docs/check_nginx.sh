#!/usr/bin/env bash
# tests/docs/check_nginx.sh -- the nginx site of docs/security.md passes `nginx -t` as written,
# with the nginx on this machine (Debian bookworm's is 1.22). Only the certificate paths are
# replaced, by a self-signed pair made here; everything else is the recipe verbatim, included
# in a minimal nginx.conf. Exit 77 (skipped) without nginx or openssl.
#
#     tests/docs/check_nginx.sh SOURCE_DIR
set -euo pipefail

src=${1:?usage: $0 SOURCE_DIR}
nginx=$(command -v nginx || true)
[ -n "$nginx" ] || nginx=$(ls /usr/sbin/nginx 2>/dev/null || true)
if [ -z "$nginx" ] || ! command -v openssl >/dev/null 2>&1; then
    echo "check_nginx: skipped (needs nginx and openssl)"
    exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/neurond-nginx.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# The first ```nginx block of docs/security.md.
awk '/^```nginx$/ {on = 1; next} on && /^```$/ {exit} on {print}' "$src/docs/security.md" \
    >"$dir/site.conf"
if ! grep -q 'proxy_pass' "$dir/site.conf"; then
    echo "check_nginx: no nginx site found in docs/security.md" >&2
    exit 1
fi

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=neurond.example.org' \
    -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" >/dev/null 2>&1
sed -i -e "s|ssl_certificate .*;|ssl_certificate $dir/fullchain.pem;|" \
    -e "s|ssl_certificate_key .*;|ssl_certificate_key $dir/privkey.pem;|" "$dir/site.conf"

mkdir -p "$dir/logs"
cat >"$dir/nginx.conf" <<CONF
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/site.conf;
}
CONF

echo "check_nginx: $("$nginx" -v 2>&1)"
if ! "$nginx" -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" 2>"$dir/out"; then
    echo "check_nginx: nginx -t refuses docs/security.md's site:" >&2
    cat "$dir/out" >&2
    exit 1
fi
# Warnings (a deprecated directive) fail too: the recipe should be clean on this nginx.
if grep -q '\[warn\]\|\[emerg\]' "$dir/out"; then
    echo "check_nginx: nginx -t warns about docs/security.md's site:" >&2
    cat "$dir/out" >&2
    exit 1
fi
echo "check_nginx: docs/security.md's nginx site: syntax ok"
