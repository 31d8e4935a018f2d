#!/usr/bin/env bash
# tests/docs/check_haproxy.sh -- docker/haproxy.cfg and docker/compose.cluster.yaml, checked here
# without containers:
#   1. `haproxy -c` accepts docker/haproxy.cfg as written (its replica names need not resolve:
#      init-addr none), and, with the names pointed at 127.0.0.1, without a single warning;
#   2. the compose file parses (and `docker-compose config` accepts it, when installed) and
#      describes the cluster the documentation promises: PostgreSQL 15 with a volume and a
#      pg_isready health check, three replicas of the image of docker/Dockerfile on
#      postgresql:// with their own --advertise, waiting for a healthy PostgreSQL, and HAProxy
#      2.8 with docker/haproxy.cfg publishing one port, its servers being those replicas.
# Exit 77 (skipped) without haproxy, or without python3's yaml module.
#
#     tests/docs/check_haproxy.sh SOURCE_DIR
set -euo pipefail

src=${1:?usage: $0 SOURCE_DIR}
haproxy=$(command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null || true)
if [ -z "$haproxy" ] || ! python3 -c 'import yaml' 2>/dev/null; then
  echo "check_haproxy: skipped (needs haproxy and python3 with yaml)"
  exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/neurond-haproxy.XXXXXX")
trap 'rm -rf "$dir"' EXIT

echo "check_haproxy: $("$haproxy" -v 2>&1 | head -n 1)"
if ! "$haproxy" -c -f "$src/docker/haproxy.cfg" >"$dir/out" 2>&1; then
  echo "check_haproxy: haproxy -c refuses docker/haproxy.cfg:" >&2
  cat "$dir/out" >&2
  exit 1
fi
sed -E 's/ neurond-([0-9]+):8080 / 127.0.0.1:808\1 /' "$src/docker/haproxy.cfg" >"$dir/local.cfg"
"$haproxy" -c -f "$dir/local.cfg" >"$dir/out" 2>&1 || true
if grep -q '\[WARNING\]\|\[ALERT\]' "$dir/out" || ! grep -q 'Configuration file is valid' "$dir/out"; then
  echo "check_haproxy: haproxy -c warns about docker/haproxy.cfg:" >&2
  cat "$dir/out" >&2
  exit 1
fi
echo "check_haproxy: docker/haproxy.cfg: valid, no warnings"

# docker-compose resolves the secrets' files: a scratch copy of docker/ with both.
mkdir -p "$dir/ctx/docker"
cp "$src/docker/compose.cluster.yaml" "$src/docker/haproxy.cfg" "$src/docker/Dockerfile" \
  "$dir/ctx/docker/"
echo "a-token-of-sixteen-characters" >"$dir/ctx/docker/tokens.txt"
echo "a-password" >"$dir/ctx/docker/pg_password.txt"
compose="$dir/ctx/docker/compose.cluster.yaml"
if command -v docker-compose >/dev/null 2>&1; then
  if ! docker-compose -f "$compose" config >"$dir/config.yaml" 2>"$dir/err"; then
    echo "check_haproxy: docker-compose config rejects docker/compose.cluster.yaml:" >&2
    cat "$dir/err" >&2
    exit 1
  fi
  echo "check_haproxy: docker-compose config accepts docker/compose.cluster.yaml"
fi

python3 - "$compose" "$src/docker/haproxy.cfg" <<'EOF'
import re, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
cfg = open(sys.argv[2]).read()
def check(ok, what):
    if not ok:
        sys.exit("check_haproxy: docker/compose.cluster.yaml: " + what)
s = c["services"]
pg = s["postgres"]
check(pg["image"] == "postgres:15", "postgres is not the postgres:15 image")
check(any(str(v).endswith(":/var/lib/postgresql/data") and str(v).split(":")[0] in c["volumes"]
          for v in pg["volumes"]), "no named volume on PostgreSQL's data")
check("pg_isready" in " ".join(pg["healthcheck"]["test"]), "no pg_isready health check")
replicas = sorted(n for n in s if n.startswith("neurond-"))
check(replicas == ["neurond-1", "neurond-2", "neurond-3"], "not three replicas: %s" % replicas)
for n in replicas:
    r = s[n]
    check(r["build"]["dockerfile"] == "docker/Dockerfile", n + " is not docker/Dockerfile")
    cmd = r["command"]
    db = cmd[cmd.index("--db") + 1]
    check(db.startswith("postgresql://") and "@postgres:5432/" in db, n + ": --db " + db)
    check(":" not in db.split("//")[1].split("@")[0], n + ": a password in --db")
    check(cmd[cmd.index("--advertise") + 1] == n + ":8080", n + ": --advertise")
    check(r["depends_on"]["postgres"]["condition"] == "service_healthy",
          n + " does not wait for a healthy PostgreSQL")
    check("ports" not in r, n + " publishes a port: only HAProxy should")
    check("healthcheck" in r, n + " has no health check")
h = s["haproxy"]
check(h["image"] == "haproxy:2.8", "haproxy is not the haproxy:2.8 image")
check(any(str(v).startswith("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg")
          for v in h["volumes"]), "haproxy does not mount docker/haproxy.cfg")
check(len(h["ports"]) == 1 and str(h["ports"][0]).endswith(":8080"), "haproxy's one port")
servers = re.findall(r"^\s*server (\S+) (\S+) check", cfg, re.M)
check(sorted(servers) == [(n, n + ":8080") for n in replicas],
      "docker/haproxy.cfg's servers are not the replicas: %s" % servers)
check(re.search(r"^\s*bind :8080$", cfg, re.M), "docker/haproxy.cfg does not listen on :8080")
print("check_haproxy: docker/compose.cluster.yaml: postgres:15 (volume, pg_isready), "
      "%s on postgresql:// behind haproxy:2.8 on port 8080" % ", ".join(replicas))
EOF
