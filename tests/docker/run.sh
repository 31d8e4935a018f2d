#!/usr/bin/env bash
# shellcheck disable=SC2154  # img_* and c_* are set by the generated files sourced below
# Build docker/Dockerfile for real and run the image it makes, without a Docker engine and
# without an image registry:
#   1. the base image debian:bookworm-slim is made locally: debootstrap (minbase) from the Debian
#      mirror apt already uses, slimmed like the official image, `podman import`ed; the rootfs
#      tarball is cached in $NEUROND_DOCKER_CACHE (default /var/cache/neurond-test);
#   2. `podman build` of docker/Dockerfile (podman's layer cache makes later builds fast);
#   3. the image's metadata: non-root USER, VOLUME /data, EXPOSE 8080, HEALTHCHECK, ENTRYPOINT;
#   4. containers cannot be started on this machine (the OCI runtime's setrlimit is refused), so
#      the image's own filesystem runs instead: `podman create` + `podman mount`, then the image's
#      ENTRYPOINT + CMD, as the image's USER, with the image's Env and WORKDIR, chrooted into it,
#      in network, mount and pid namespaces of its own (so it binds 0.0.0.0:8080 exactly as in
#      the image without touching the machine's port 8080, and every mount and process made for
#      it vanishes with it, even if this script is killed);
#      there: /healthz, the image's HEALTHCHECK command, a model created and trained, the uid,
#      restart with docker/compose.yaml's command and secret (bearer tokens), clean stop;
#   5. `docker-compose config` validates docker/compose.yaml (in a scratch copy with a tokens.txt).
# Everything it makes is removed on every exit path, except the cached base rootfs and podman's
# layer cache: the image under test stays as localhost/neurond-test:latest and its build stage
# as localhost/neurond-test-build:latest (they anchor the cache). Needs root, podman,
# debootstrap, docker-compose, ip, curl, python3 (with yaml, which docker-compose depends on).
# NEUROND_DOCKER_REFRESH=1 re-makes the base image from a fresh debootstrap.
# usage: tests/docker/run.sh [SOURCE_DIR]       (default: this repository)
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
cache=${NEUROND_DOCKER_CACHE:-/var/cache/neurond-test}
base=docker.io/library/debian:bookworm-slim
suite=bookworm
run_id=$$-$RANDOM$RANDOM
image=localhost/neurond-test:latest          # the image under test, kept (see the build step)
stage_tag=localhost/neurond-test-build:latest
ctr=neurond-test-$run_id

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: needs root (rootful podman, chroot, namespaces)"
  exit 77
fi
for tool in podman debootstrap docker-compose ip curl python3 chroot nsenter unshare setpriv \
            flock; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (scripts/setup-deps)"; exit 1; }
done

t0=$SECONDS
step_t=$SECONDS
step() { echo "== $* (at ${SECONDS}s)"; step_t=$SECONDS; }
took() { echo "   took $((SECONDS - step_t)) s"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/neurond-docker-test.XXXXXX)
holder='' init='' nsent='' daemon='' mnt='' created=0 image_id=''
podman_() { podman --cgroup-manager=cgroupfs "$@"; }
# remove_rootfs DIR: unmount whatever an interrupted debootstrap left mounted in DIR (proc, sys,
# maybe a bind-mounted /dev), then delete DIR without crossing into another file system.
remove_rootfs() {
  local dir=$1 m
  [ -d "$dir" ] || return 0
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$dir"
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon"
    for _ in $(seq 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon" 2>/dev/null
  fi
  # Killing the holder kills the namespaces' init, so every process in them; their mounts
  # (proc, sys, dev) go with the last one.
  [ -n "$holder" ] && kill -KILL "$holder" 2>/dev/null
  wait 2>/dev/null
  if [ -n "$init" ]; then
    for _ in $(seq 100); do kill -0 "$init" 2>/dev/null || break; sleep 0.05; done
  fi
  if [ "$created" -eq 1 ]; then
    podman_ umount "$ctr" >/dev/null 2>&1
    podman_ rm -f -v "$ctr" >/dev/null 2>&1
  fi
  if [ -n "$mnt" ] && grep -qF " $mnt " /proc/self/mountinfo; then
    echo "WARNING: $mnt is still mounted"
    rc=1
  fi
  remove_rootfs "$cache/rootfs.$run_id"
  rm -f "$cache/$suite-minbase.tar.$run_id.tmp"
  rm -rf "$work"
  echo "== docker test: $([ "$rc" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - t0)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Containers and half-made root file systems left by runs of this test that were killed (SIGKILL,
# a ctest timeout) before their cleanup: their names carry the run's pid.
alive() { grep -qsa 'docker/run.sh' "/proc/$1/cmdline"; }
for old in $(podman_ ps -a --filter name='^neurond-test-' --format '{{.Names}}'); do
  pid=${old#neurond-test-}
  if ! alive "${pid%%-*}"; then
    podman_ umount "$old" >/dev/null 2>&1 || true
    podman_ rm -f -v "$old" >/dev/null 2>&1 || true
    echo "   removed the container $old, left by a killed run"
  fi
done
for old in "$cache"/rootfs.* "$cache"/*.tar.*.tmp; do
  [ -e "$old" ] || continue
  pid=${old%.tmp}
  pid=${pid##*.}      # rootfs.PID-N, bookworm-minbase.tar.PID-N.tmp
  if ! alive "${pid%%-*}"; then
    remove_rootfs "$old"
    rm -f "$old"
    echo "   removed $old, left by a killed run"
  fi
done

# ---- 1. the base image --------------------------------------------------------------------------

# The first URI that apt uses for SUITE (one-line .list or deb822 .sources format), if any.
apt_uri() {
  local want=$1 f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$want" '$1 == "deb" {
        i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$want" 'BEGIN { RS = ""; FS = "\n" } {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^#/ || !match($i, /^[A-Za-z-]+:/)) continue
          k = tolower(substr($i, 1, RLENGTH - 1)); v = substr($i, RLENGTH + 1)
          if (k == "types") types = " " v " "; else if (k == "uris") uris = v
          else if (k == "suites") suites = " " v " "; else if (k == "enabled") enabled = v
        }
        gsub(/[ \t]+/, " ", suites); gsub(/[ \t]+/, " ", types)
        if (tolower(enabled) !~ /no/ && types ~ / deb / && index(suites, " " s " ")) {
          split(uris, u, " "); print u[1]; exit } }' "$f"
  done
}

make_base_tar() {  # make_base_tar OUT.tar
  local out=$1 mirror security root
  mirror=$(apt_uri "$suite" | head -n 1)
  security=$(apt_uri "$suite-security" | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$cache/rootfs.$run_id
  echo "   debootstrap --variant=minbase $suite from $mirror"
  if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log"
    fail "debootstrap failed (log above)"
  fi
  # The official image's sources (main, updates, security) pointing at the mirror apt uses here,
  # with this machine's apt Acquire settings for them (proxy, Valid-Until on a snapshot).
  rm -f "$root/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
      "$mirror" "$suite" "$suite"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$suite"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } >"$root/etc/apt/sources.list.d/debian.sources"
  local conf acquire
  acquire=$(for conf in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
              [ -f "$conf" ] && cat "$conf"
            done | grep -E '^[[:space:]]*Acquire::([a-z]+::)?(Proxy|Check-Valid-Until|Check-Date)' ||
            true)
  if [ -n "$acquire" ]; then
    printf '%s\n' "$acquire" >"$root/etc/apt/apt.conf.d/99host-acquire"
  fi
  # As the official image's apt and dpkg settings (debuerreotype): no package caches, no
  # translations, gzipped indexes, unsafe-io. Slim, as debian:*-slim is: no docs, man pages,
  # locales (also for packages installed later), no downloaded packages or lists, no device
  # nodes or host files.
  printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' \
    >"$root/etc/apt/apt.conf.d/docker-clean"
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' \
    >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  echo 'force-unsafe-io' >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "${root:?}"/usr/share/{man,info,groff,lintian,linda}/* \
    "${root:?}"/var/cache/apt/archives/*.deb "${root:?}"/var/cache/apt/*.bin \
    "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/log/* "${root:?}"/dev/* "${root:?}"/tmp/* \
    "${root:?}"/etc/resolv.conf "${root:?}"/etc/hostname
  tar --numeric-owner --xattrs -C "$root" -cf "$out.$run_id.tmp" .
  mv "$out.$run_id.tmp" "$out"
  remove_rootfs "$root"
}

step "base image $base"
mkdir -p "$cache"
(
  flock 9
  if [ "${NEUROND_DOCKER_REFRESH:-0}" = 1 ]; then
    rm -f "$cache/$suite-minbase.tar"
    podman_ untag "$base" >/dev/null 2>&1 || true
  fi
  if podman_ image exists "$base"; then
    echo "   already in podman's storage"
  else
    if [ ! -s "$cache/$suite-minbase.tar" ]; then
      make_base_tar "$cache/$suite-minbase.tar"
    else
      echo "   from the cached $cache/$suite-minbase.tar"
    fi
    if ! podman_ import --change 'CMD ["bash"]' "$cache/$suite-minbase.tar" "$base" \
         >"$work/import.log" 2>&1; then
      cat "$work/import.log"
      fail "podman import of $cache/$suite-minbase.tar failed"
    fi
  fi
) 9>"$cache/lock"
took

# ---- 2. build -----------------------------------------------------------------------------------

step "podman build -f docker/Dockerfile -t $image"
# The image and its build stage keep fixed tags after the test: they anchor podman's layer cache
# (a removed image takes its untagged parent layers, the apt ones too, with it). The images
# they replace are removed, so stale layers do not pile up; an image still in use by another
# run of this test is left alone (rmi without -f refuses it).
old_image=$(podman_ image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
old_stage=$(podman_ image inspect --format '{{.Id}}' "$stage_tag" 2>/dev/null || true)
if ! podman_ build --format docker --pull=never --isolation=chroot --layers \
      --iidfile "$work/iid" -f "$src/docker/Dockerfile" -t "$image" "$src" \
      >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log"
  fail "podman build failed (last lines above)"
fi
image_id=$(cat "$work/iid")
image_id=${image_id#sha256:}
# The build stage's last layer: the last "--> ID" line before the runtime stage's first step.
stage_id=$(awk '/^\[[0-9]+\/[0-9]+\] STEP 1\// && seen { print last; exit }
                /^--> [0-9a-f]+$/ { last = $2; seen = 1 }' "$work/build.log")
[ -n "$stage_id" ] && podman_ tag "$stage_id" "$stage_tag"
for old in "$old_image" "$old_stage"; do
  if [ -n "$old" ] && [ "$old" != "$image_id" ] && [[ $old != "$stage_id"* ]]; then
    podman_ rmi "$old" >/dev/null 2>&1 || true
  fi
done
grep -E '^\[[0-9]+/[0-9]+\] (STEP|COMMIT)|Using cache' "$work/build.log" | cut -c1-100 |
  sed 's/^/   /' || true
echo "   image ${image_id:0:12}; build stage ${stage_id:-?}"
took

# ---- 3. image metadata --------------------------------------------------------------------------

step "image metadata"
podman_ image inspect "$image_id" >"$work/inspect.json"
# One shell-quoted line per fact: user, entrypoint+cmd, env, workdir, healthcheck, ports, volumes.
python3 - "$work/inspect.json" >"$work/meta.sh" <<'EOF'
import json, shlex, sys
img = json.load(open(sys.argv[1]))[0]
cfg = img.get("Config") or {}
hc = cfg.get("Healthcheck") or img.get("Healthcheck") or img.get("HealthCheck") or {}
q = lambda v: " ".join(shlex.quote(x) for x in v)
print("img_user=%s" % shlex.quote(cfg.get("User") or ""))
print("img_cmd=(%s)" % q((cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])))
print("img_env=(%s)" % q(cfg.get("Env") or []))
print("img_workdir=%s" % shlex.quote(cfg.get("WorkingDir") or "/"))
print("img_health=(%s)" % q(hc.get("Test") or []))
print("img_ports=%s" % shlex.quote(" ".join(sorted(cfg.get("ExposedPorts") or {}))))
print("img_volumes=%s" % shlex.quote(" ".join(sorted(cfg.get("Volumes") or {}))))
print("img_size=%d" % (img.get("Size") or 0))
EOF
# shellcheck source=/dev/null
. "$work/meta.sh"
echo "   user=$img_user ports=$img_ports volumes=$img_volumes workdir=$img_workdir" \
     "size=$((img_size / 1024 / 1024)) MiB"
echo "   command: ${img_cmd[*]}"
[ "$img_ports" = 8080/tcp ] || fail "EXPOSE is '$img_ports', expected 8080/tcp"
[ "$img_volumes" = /data ] || fail "VOLUME is '$img_volumes', expected /data"
[ "${#img_health[@]}" -gt 1 ] || fail "the image has no HEALTHCHECK"
[ -n "$img_user" ] || fail "the image has no USER: it would run as root"
expect=(--bind 0.0.0.0 --port 8080 --db /data/neurond.db)
[[ " ${img_cmd[*]} " == *" ${expect[*]} "* ]] ||
  fail "the command does not contain '${expect[*]}': ${img_cmd[*]}"
took

# ---- 4. run the image's filesystem --------------------------------------------------------------

step "podman create + mount"
podman_ create --name "$ctr" "$image_id" >/dev/null
created=1
mnt=$(podman_ mount "$ctr")
[ -x "$mnt/usr/local/bin/neurond" ] || fail "no /usr/local/bin/neurond in the image"

# USER as uid:gid, names resolved in the image's own passwd and group files.
user=${img_user%%:*} group=
[[ $img_user == *:* ]] && group=${img_user#*:}
if [[ ! $user =~ ^[0-9]+$ ]]; then
  uid=$(awk -F: -v u="$user" '$1 == u {print $3}' "$mnt/etc/passwd")
  [ -n "$uid" ] || fail "USER $user is not in the image's /etc/passwd"
else
  uid=$user
fi
if [ -z "$group" ]; then
  gid=$(awk -F: -v u="$uid" '$3 == u {print $4}' "$mnt/etc/passwd")
elif [[ ! $group =~ ^[0-9]+$ ]]; then
  gid=$(awk -F: -v g="$group" '$1 == g {print $3}' "$mnt/etc/group")
else
  gid=$group
fi
[ -n "$gid" ] || fail "cannot resolve the group of USER $img_user"
[ "$uid" -ne 0 ] || fail "USER $img_user is root"
echo "   USER $img_user = uid $uid gid $gid; mounted at $mnt"

# The runtime image: every library resolved, no compiler, no build tree, /data owned by USER.
if ! chroot "$mnt" ldd /usr/local/bin/neurond >"$work/ldd.txt" 2>&1 ||
   grep -q 'not found' "$work/ldd.txt"; then
  cat "$work/ldd.txt"; fail "neurond's shared libraries are not all in the image"
fi
for tool in gcc cc cmake make curl; do
  [ ! -e "$mnt/usr/bin/$tool" ] || fail "the runtime image has /usr/bin/$tool (build-only)"
done
[ ! -e "$mnt/src" ] || fail "the runtime image has the build stage's /src"
leftovers=$(find "$mnt/var/cache/apt" "$mnt/var/lib/apt/lists" -type f \( -name '*.deb' -o \
  -name '*.bin' -o -name '*_Packages*' -o -name '*Release*' \) | wc -l)
[ "$leftovers" -eq 0 ] || fail "the runtime image keeps $leftovers apt cache or list files"
[ "$(stat -c %u:%g "$mnt/data")" = "$uid:$gid" ] ||
  fail "/data is owned by $(stat -c %u:%g "$mnt/data"), not by USER $uid:$gid"
echo "   ldd: $(awk '{print $1}' "$work/ldd.txt" | tr '\n' ' ')"

# Namespaces of its own, as a container has: network (only a loopback), mount (private: /proc,
# /sys and a minimal /dev mounted inside the image's root vanish with it) and pid (its init is
# a sleep; when that dies, the kernel kills everything left in it). The holder, unshare, dies
# with this script even on SIGKILL (parent-death signal) and then kills that init
# (--kill-child), so nothing started here can outlive the test.
setpriv --pdeathsig KILL \
  unshare --net --mount --propagation private --pid --fork --kill-child sleep infinity &
holder=$!
for _ in $(seq 100); do
  init=$(awk '{print $1}' "/proc/$holder/task/$holder/children" 2>/dev/null || true)
  [ -n "$init" ] && [ "$(readlink "/proc/$init/ns/pid" 2>/dev/null)" != \
                        "$(readlink /proc/self/ns/pid)" ] && break
  init=''
  sleep 0.05
done
[ -n "$init" ] || fail "unshare did not make its namespaces"
# in_ns CMD...: CMD in those namespaces (nsenter forks for the pid namespace, waits, and exits
# with CMD's status).
in_ns() { nsenter --target "$init" --net --mount --pid "$@"; }
in_ns ip link set lo up
in_ns mount -t proc proc "$mnt/proc"
in_ns mount -t sysfs -o ro sysfs "$mnt/sys"
in_ns mount -t tmpfs -o mode=755,nosuid tmpfs "$mnt/dev"
for node in null zero full random urandom tty; do
  in_ns touch "$mnt/dev/$node"
  in_ns mount --bind "/dev/$node" "$mnt/dev/$node"
done
in_ns mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$mnt/dev/shm" 2>/dev/null ||
  { in_ns mkdir -p "$mnt/dev/shm" && in_ns mount -t tmpfs -o mode=1777 tmpfs "$mnt/dev/shm"; }

# image_argv CMD...: sets argv to run CMD in the image's root, as its USER, with its Env and
# WORKDIR, in the namespaces. nsenter forks once; its child execs chroot, env, then CMD.
image_argv() {
  argv=(nsenter --target "$init" --net --mount --pid
        chroot --userspec="$uid:$gid" --groups="$gid" "$mnt"
        /usr/bin/env -i -C "$img_workdir" HOSTNAME="$ctr" HOME=/data "${img_env[@]}" "$@")
}
as_image() { local argv; image_argv "$@"; "${argv[@]}"; }

start_daemon() {  # start_daemon EXTRA_ARGS...: the image's entrypoint + cmd, then EXTRA_ARGS
  : >"$work/out"; : >"$work/err"
  local argv
  image_argv "${img_cmd[@]}" "$@"
  "${argv[@]}" >"$work/out" 2>"$work/err" &
  nsent=$!
  daemon=''
  for _ in $(seq 100); do   # nsenter's only child is (after its execs) neurond
    daemon=$(awk '{print $1}' "/proc/$nsent/task/$nsent/children" 2>/dev/null || true)
    [ -n "$daemon" ] && break
    kill -0 "$nsent" 2>/dev/null || break
    sleep 0.02
  done
  [ -n "$daemon" ] || { cat "$work/out" "$work/err"; fail "neurond did not start"; }
  for _ in $(seq 300); do
    grep -q 'listening on' "$work/out" && break
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q 'listening on 0.0.0.0:8080' "$work/out"; then
    cat "$work/out" "$work/err"
    fail "neurond did not start listening on 0.0.0.0:8080"
  fi
  echo "   $(head -n 1 "$work/out") (pid $daemon)"
}

stop_daemon() {
  local rc=0
  kill -TERM "$daemon"
  for _ in $(seq 400); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
  wait "$nsent" || rc=$?      # nsenter exits with neurond's status
  daemon='' nsent=''
  [ "$rc" -eq 0 ] || { tail -n 20 "$work/err"; fail "neurond exited $rc after SIGTERM, not 0"; }
  echo "   SIGTERM: exited 0"
}

health() { as_image "${img_health[@]:1}"; }   # the image's HEALTHCHECK command ("CMD", ...)
[ "${img_health[0]}" = CMD ] || fail "HEALTHCHECK is '${img_health[0]}', expected the exec form"

url=http://127.0.0.1:8080
api() {  # api METHOD PATH [BODY] [curl args...]: prints the body, then the status on its own line
  local method=$1 path=$2 body=${3:-}
  shift 2; [ $# -gt 0 ] && shift
  in_ns curl -sS -o "$work/body" -w '%{http_code}' -X "$method" \
    -H 'Content-Type: application/json' ${body:+--data "$body"} "$@" "$url$path" >"$work/code"
  cat "$work/body"; echo; cat "$work/code"; echo
}
expect_status() {  # expect_status CODE METHOD PATH [BODY] [curl args...]
  local want=$1; shift
  api "$@" >"$work/resp"
  local got; got=$(tail -n 1 "$work/resp")
  if [ "$got" != "$want" ]; then
    head -n -1 "$work/resp" >&2
    fail "$1 $2: status $got, expected $want"
  fi
  head -n -1 "$work/resp"
}
json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)"; }

step "run the image's command as its USER (first start: empty volume, no tokens)"
start_daemon
read -r _ ruid euid suid fsuid < <(grep '^Uid:' "/proc/$daemon/status")
read -r _ rgid egid sgid fsgid < <(grep '^Gid:' "/proc/$daemon/status")
echo "   /proc/$daemon/status: Uid $ruid $euid $suid $fsuid, Gid $rgid $egid $sgid $fsgid"
for v in "$ruid" "$euid" "$suid" "$fsuid"; do [ "$v" = "$uid" ] || fail "runs with uid $v"; done
for v in "$rgid" "$egid" "$sgid" "$fsgid"; do [ "$v" = "$gid" ] || fail "runs with gid $v"; done
[ "$(readlink "/proc/$daemon/root")" = "$mnt" ] || fail "not running in the image's root"

out=$(expect_status 200 GET /healthz)
echo "   GET /healthz: $out"
[ "$(json 'd["status"]' <<<"$out")" = ok ] || fail "/healthz is not ok"
health || fail "the image's HEALTHCHECK command fails against a healthy neurond"
echo "   HEALTHCHECK command: exit 0"

model='{"name":"docker","kind":"linear","inputs":2,
        "optimizer":{"method":"sgd","learning_rate":0.05}}'
out=$(expect_status 201 POST /v1/models "$model")
id=$(json 'd["id"]' <<<"$out")
expect_status 201 POST "/v1/models/$id/batches" '{"x":[[1,2],[1,3],[2,2],[0,1]],"y":[8,11,10,3]}' \
  >/dev/null
out=$(expect_status 200 POST "/v1/models/$id/train" '{"steps":50}')
echo "   train: $out"
before=$(json 'd["loss_before"]' <<<"$out")
after=$(json 'd["loss_after"]' <<<"$out")
python3 -c "import sys; sys.exit(0 if $after < $before else 1)" ||
  fail "training did not lower the loss ($before -> $after)"
[ "$(stat -c %u "$mnt/data/neurond.db")" = "$uid" ] || fail "/data/neurond.db not owned by $uid"
stop_daemon
if health 2>/dev/null; then fail "the HEALTHCHECK command passes with neurond stopped"; fi
echo "   HEALTHCHECK command with neurond stopped: fails, as it must"
took

step "restart with docker/compose.yaml's command and secret (bearer tokens)"
python3 - "$src/docker/compose.yaml" >"$work/compose.sh" <<'EOF'
import shlex, sys, yaml
svc = yaml.safe_load(open(sys.argv[1]))["services"]["neurond"]
cmd = svc.get("command") or []
cmd = shlex.split(cmd) if isinstance(cmd, str) else cmd
hc = [t.replace("$$", "$") for t in (svc.get("healthcheck") or {}).get("test") or []]
sec = svc.get("secrets") or []
names = [s if isinstance(s, str) else s.get("target") or s["source"] for s in sec]
print("c_cmd=(%s)" % " ".join(shlex.quote(str(x)) for x in cmd))
print("c_health=(%s)" % " ".join(shlex.quote(x) for x in hc))
print("c_secrets=(%s)" % " ".join(shlex.quote(n) for n in names))
EOF
# shellcheck source=/dev/null
. "$work/compose.sh"
[ "${c_health[*]}" = "${img_health[*]}" ] ||
  fail "compose.yaml's healthcheck differs from the image's HEALTHCHECK"
[ "${#c_secrets[@]}" -eq 1 ] || fail "compose.yaml should have one secret, has ${#c_secrets[@]}"
secret=/run/secrets/${c_secrets[0]}
[[ " ${c_cmd[*]} " == *" --token-file $secret "* ]] ||
  fail "compose.yaml's command does not read the secret $secret: ${c_cmd[*]}"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$mnt$(dirname "$secret")"
printf '# test tokens\n\n%s\n' "$token" >"$mnt$secret"
chown "$uid:$gid" "$mnt$secret"      # as docker/tokens.example.txt says: readable by the uid
chmod 0400 "$mnt$secret"
start_daemon "${c_cmd[@]}"
health || fail "the HEALTHCHECK command fails with tokens on (/healthz must stay open)"
expect_status 401 GET /v1/models >/dev/null
expect_status 401 GET /v1/models "" -H "Authorization: Bearer wrong-$token" >/dev/null
out=$(expect_status 200 GET "/v1/models/$id" "" -H "Authorization: Bearer $token")
step_now=$(json 'd["step"]' <<<"$out")
[ "$step_now" = 50 ] || fail "after the restart model $id is at step $step_now, expected 50"
echo "   401 without a token, 200 with it; model $id kept its 50 steps across the restart"
grep -qF "$token" "$work/out" "$work/err" && fail "the token appears in neurond's output"
stop_daemon
took

# ---- 5. compose.yaml ----------------------------------------------------------------------------

step "docker-compose config (scratch copy of docker/ with a tokens.txt)"
mkdir -p "$work/ctx/docker"
cp "$src/docker/compose.yaml" "$src/docker/Dockerfile" "$work/ctx/docker/"
printf '%s\n' "$token" >"$work/ctx/docker/tokens.txt"
if ! docker-compose -f "$work/ctx/docker/compose.yaml" config >"$work/compose.out" \
     2>"$work/compose.err"; then
  cat "$work/compose.err"
  fail "docker-compose config rejects docker/compose.yaml"
fi
python3 - "$work/compose.out" "$work/ctx" <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1])); ctx = sys.argv[2]
s = c["services"]["neurond"]
def check(ok, what):
    if not ok:
        sys.exit("FAIL: compose.yaml: " + what)
check(s["build"]["context"] == ctx, "build context is not the repository root")
check(s["build"].get("dockerfile") == "docker/Dockerfile", "dockerfile is not docker/Dockerfile")
check(any(p.get("published") in (8080, "8080") and p.get("target") in (8080, "8080")
          if isinstance(p, dict) else str(p).startswith("8080:8080") for p in s["ports"]),
      "port 8080:8080 not published")
vols = [v if isinstance(v, str) else "%s:%s" % (v["source"], v["target"]) for v in s["volumes"]]
named = [v.split(":")[0] for v in vols if v.split(":")[1] == "/data"]
check(named and named[0] in (c.get("volumes") or {}), "no named volume on /data")
check(s.get("restart") == "unless-stopped", "restart is not unless-stopped")
check(c["secrets"]["neurond_tokens"]["file"] == ctx + "/docker/tokens.txt",
      "secret neurond_tokens is not ./tokens.txt")
check("healthcheck" in s, "no healthcheck")
print("   services.neurond: build, 8080:8080, volume %s on /data, secret, restart, healthcheck"
      % named[0])
EOF
took

echo "== all docker checks passed"
