#!/usr/bin/env bash
# Container test: builds the image from the Dockerfile with podman and runs the
# docker-compose.yml stack in real containers, then checks it end to end.
# Slow (the image build compiles the project): not part of `.ci/run`.
#
#   bash scripts/container-test.sh                 # from the repository root, as root
#   JOBS=2 bash scripts/container-test.sh          # compile jobs inside the image build
#
# Steps (docs/deployment.md, "Container test"):
#   deps   installs podman, runc, catatonit (compose's `init: true`), the CNI
#          dnsname plugin (service names), podman-compose, debootstrap, iptables,
#          prometheus, dataset-fashion-mnist, python3-yaml when missing;
#   base   makes the Dockerfile's base images debian:12 and debian:12-slim with
#          debootstrap from the host's apt mirror when they are not in podman's
#          store (tagged docker.io/library/debian:12{,-slim});
#   build  `podman build --format docker --network=host` of the Dockerfile, under
#          nice; checks the image (size, user, no compiler, libraries, HEALTHCHECK);
#   stack  podman-compose creates optimizer, bootstrap, server and prometheus from
#          the unchanged docker-compose.yml; they are started in compose's
#          depends_on order (podman-compose 1.0.3 ignores `condition:`), waiting
#          for the compose health checks; then:
#          classify through the published port, a new variant from the optimizer
#          swapped in by the server, /metrics of both, Prometheus (compose's
#          deploy/prometheus/prometheus.yml) with every target up; then the
#          deploy/k8s workloads (optimizer, bootstrap Job, server pod with its
#          init container) run from their manifests' commands, env and
#          securityContext on empty volumes; last, SIGTERM stops the server.
# Everything it creates (containers, volumes, network, the Prometheus stand-in's
# tag) is removed on exit; the images hapi-serve:latest, debian:12{,-slim} and
# localhost/hapi-ct-prometheus stay as a cache. Exits non-zero on the first
# failed check, naming it.
#
# Environment:
#   JOBS            compile jobs in the image build [the Dockerfile's default: all cores]
#   HAPI_CT_STEPS   steps to run [deps base build stack]
#   HAPI_CT_NICE    niceness of the image build [10]
#   HAPI_CT_PROJECT compose project name [hapi-ct]
#   HAPI_CT_WORK    scratch directory [/var/tmp/hapi-container-test]
#   HAPI_CT_KEEP    1: leave the stack running at the end [0]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STEPS=" ${HAPI_CT_STEPS:-deps base build stack} "
NICE=${HAPI_CT_NICE:-10}
PROJECT=${HAPI_CT_PROJECT:-hapi-ct}
WORK=${HAPI_CT_WORK:-/var/tmp/hapi-container-test}
KEEP=${HAPI_CT_KEEP:-0}
IMAGE=hapi-serve:latest          # docker-compose.yml's `image:`
PROM_STANDIN=localhost/hapi-ct-prometheus:2.42.0
DATASET=/usr/share/datasets/fashion-mnist
RESULTS=$WORK/results.txt

mkdir -p "$WORK"
: >"$RESULTS"
log() { printf '[container-test %s] %s\n' "$(date +%T)" "$*"; }
result() { printf '%-34s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
has_step() { [[ $STEPS == *" $1 "* ]]; }
# A one-off container of an image: without the image's HEALTHCHECK, which podman
# would try to schedule with systemd (absent here).
run() { podman run --rm --no-healthcheck "$@"; }

CONTAINERS=()   # the compose containers, for logs on failure
fail() {
  log "FAIL: $*"
  for c in "${CONTAINERS[@]}"; do
    if podman container exists "$c" 2>/dev/null; then
      echo "---- podman logs --tail 25 $c"
      podman logs --tail 25 "$c" 2>&1 || true
    fi
  done
  exit 1
}

if [[ $(id -u) -ne 0 ]]; then
  echo "container-test: run as root (rootful podman; debootstrap)" >&2
  exit 2
fi

# --- deps ------------------------------------------------------------------------
PACKAGES=(podman runc catatonit containernetworking-plugins
  golang-github-containernetworking-plugin-dnsname podman-compose debootstrap
  iptables prometheus dataset-fashion-mnist python3 python3-yaml curl)
install_deps() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "deps: all ${#PACKAGES[@]} packages present"
    return
  fi
  log "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when the lists are empty or the install fails without it.
  if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then apt-get update -qq; fi
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
if has_step deps; then install_deps; fi

# podman here: the runc runtime, and ulimits within the host's hard limits
# (podman's defaults for root, nofile 1048576 and nproc 4194304, are refused by
# this kernel; nproc above kernel.pid_max too). A private containers.conf
# applies both to podman, podman build and podman-compose's podman calls.
NOFILE=$(ulimit -Hn)
NPROC=$(ulimit -Hu)
PID_MAX=$(cat /proc/sys/kernel/pid_max)
if [[ $NOFILE == unlimited ]]; then NOFILE=1048576; fi
if [[ $NPROC == unlimited ]] || ((NPROC > PID_MAX)); then NPROC=$PID_MAX; fi
cat >"$WORK/containers.conf" <<EOF
[containers]
default_capabilities = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
  "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
default_sysctls = ["net.ipv4.ping_group_range=0 0"]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$WORK/containers.conf

# --- base ------------------------------------------------------------------------
# The host's Debian mirror (main archive and security), from apt's sources.
host_mirrors() {
  python3 - <<'EOF'
import glob, re
main = sec = None
def take(uri, suites):
    global main, sec
    uri = uri.rstrip("/")
    for s in suites:
        if s == "bookworm" and not main: main = uri
        if s == "bookworm-security" and not sec: sec = uri
for f in sorted(glob.glob("/etc/apt/sources.list") + glob.glob("/etc/apt/sources.list.d/*.list")):
    for line in open(f):
        line = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            take(line[1], [line[2]])
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(f).read()):
        fields = {}
        for l in stanza.splitlines():
            if l.startswith("#") or ":" not in l or l[0].isspace(): continue
            k, v = l.split(":", 1)
            fields[k.strip().lower()] = v.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
            for uri in fields.get("uris", []):
                take(uri, fields.get("suites", []))
print(main or "http://deb.debian.org/debian", sec or "")
EOF
}

make_base_images() {
  local want=() tag
  for tag in docker.io/library/debian:12 docker.io/library/debian:12-slim; do
    if podman image exists "$tag"; then log "base: $tag present"; else want+=("$tag"); fi
  done
  ((${#want[@]} > 0)) || return 0
  local mirror security
  read -r mirror security < <(host_mirrors)
  log "base: debootstrap bookworm (minbase) from $mirror (security: ${security:-none})"
  local rootfs=$WORK/rootfs t0
  t0=$(now)
  rm -rf "$rootfs" "$rootfs-slim"
  local include=()
  if [[ $mirror == https:* ]]; then include=(--include=ca-certificates); fi
  debootstrap --variant=minbase "${include[@]}" bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap (log: $WORK/debootstrap.log)"; }
  # apt inside the image: the host's mirror, as the official image's deb822 file.
  rm -f "$rootfs/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$mirror"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [[ -n $security ]]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n' "$security"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  # As the official images: no package cache, no translations, empty lists.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
  mkdir -p "$rootfs/var/lib/apt/lists/partial"
  rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/machine-id"
  # Slim, as debian:12-slim: no documentation (but the copyrights), man pages, locales.
  cp -a "$rootfs" "$rootfs-slim"
  cat >"$rootfs-slim/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
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
  (
    cd "$rootfs-slim/usr/share"
    find doc \( -type f -o -type l \) ! -name copyright -delete
    find doc -mindepth 1 -type d -empty -delete
    rm -rf groff/* info/* linda/* lintian/* man/*
    find locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  )
  local dir
  for tag in "${want[@]}"; do
    dir=$rootfs
    [[ $tag == *-slim ]] && dir=$rootfs-slim
    tar --numeric-owner -C "$dir" -c . | podman import \
      --change 'CMD ["bash"]' \
      --change 'LABEL org.opencontainers.image.description="Debian 12 (bookworm) minbase, debootstrap by scripts/container-test.sh"' \
      - "$tag" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log"; fail "podman import $tag"; }
    run "$tag" sh -c 'test -f /etc/debian_version' || fail "base: $tag does not run"
    log "base: made $tag ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
  done
  rm -rf "$rootfs" "$rootfs-slim"
  result "base images (debootstrap)" "$(since "$t0") s"
}
if has_step base; then make_base_images; fi

# --- build -----------------------------------------------------------------------
build_image() {
  local args=(--format docker --network=host -t "$IMAGE" -f Dockerfile)
  if [[ -n ${JOBS:-} ]]; then args+=(--build-arg "JOBS=$JOBS"); fi
  log "build: podman build ${args[*]} . (nice $NICE; log: $WORK/build.log)"
  local t0
  t0=$(now)
  if ! nice -n "$NICE" podman build "${args[@]}" . >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    fail "podman build (log: $WORK/build.log)"
  fi
  result "image build" "$(since "$t0") s ($(grep -c -- '--> Using cache' "$WORK/build.log" || true) steps from cache)"
}

check_image() {
  podman image exists "$IMAGE" || fail "no image $IMAGE (run the build step)"
  local size user uid compilers health missing
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
  result "image size" "$(awk -v s="$size" 'BEGIN { printf "%.0f MB (%d bytes, uncompressed)", s/1e6, s }')"
  user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
  uid=$(run "$IMAGE" id -u)
  [[ $uid == 10001 ]] || fail "image: runs as uid $uid, want 10001 (hapi)"
  result "runtime user" "$user (uid $uid)"
  # shellcheck disable=SC2016  # expanded in the container
  compilers=$(run "$IMAGE" sh -c \
    'for c in gcc cc c++ g++ clang clang++ cpp ld as; do command -v "$c"; done; true')
  [[ -z $compilers ]] || fail "image: compiler/toolchain present: $compilers"
  result "compiler in the image" "none (gcc cc c++ g++ clang clang++ cpp ld as absent)"
  # shellcheck disable=SC2016  # expanded in the container
  missing=$(run "$IMAGE" sh -c \
    'for b in /usr/local/bin/hapi-*; do head -c 4 "$b" | grep -q ELF || continue; ldd "$b" | grep "not found" | sed "s|^|$b: |"; done; true')
  [[ -z $missing ]] || fail "image: libraries missing: $missing"
  for b in hapi-server hapi-optimizer hapi-profile hapi-train; do
    run "$IMAGE" "$b" --version >/dev/null 2>&1 || fail "image: $b --version fails"
  done
  run "$IMAGE" hapi-client --help >/dev/null || fail "image: hapi-client --help fails"
  health=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
  [[ $health == *hapi-client* ]] || fail "image: no HEALTHCHECK in the image config ($health)"
  run "$IMAGE" test -x /usr/local/bin/hapi-bootstrap || fail "image: hapi-bootstrap not executable (COPY --chmod)"
  log "image: HEALTHCHECK kept, hapi-bootstrap executable, every binary's libraries resolve"
}
if has_step build; then
  build_image
  check_image
fi

# --- stack -----------------------------------------------------------------------
has_step stack || { log "done (steps:$STEPS)"; exit 0; }

cname() { echo "${PROJECT}_$1_1"; }          # podman-compose 1.0.3's container names
CONTAINERS=("$(cname optimizer)" "$(cname bootstrap)" "$(cname server)" "$(cname prometheus)")
NETWORK=${PROJECT}_default
K8S_REPOSITORY=${PROJECT}-k8s-repository
K8S_STATE=${PROJECT}-k8s-state
PROM_IMAGE=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open("docker-compose.yml"))["services"]["prometheus"]["image"])')
PROM_TAGGED=0
TMP=$(mktemp -d "$WORK/run.XXXXXX")

compose() { podman-compose -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }

cleanup() {
  local rc=$?
  if [[ $KEEP == 1 ]]; then
    log "HAPI_CT_KEEP=1: stack left running (podman ps --filter label=io.podman.compose.project=$PROJECT)"
    return
  fi
  log "cleanup: containers, volumes and network of project $PROJECT"
  local c v
  for c in $(podman ps -a -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null); do
    podman rm -f -t 2 "$c" >/dev/null 2>&1 || true
  done
  podman rm -f -t 2 "${PROJECT}-k8s-bootstrap" "${PROJECT}-k8s-server" "${PROJECT}-k8s-optimizer" >/dev/null 2>&1 || true
  for v in $(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null) "$K8S_REPOSITORY" "$K8S_STATE"; do
    podman volume rm -f "$v" >/dev/null 2>&1 || true
  done
  podman network rm -f "$NETWORK" >/dev/null 2>&1 || true
  if [[ $PROM_TAGGED == 1 ]]; then podman untag "$PROM_STANDIN" "$PROM_IMAGE" >/dev/null 2>&1 || true; fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT

# Ports compose publishes must be free on the host.
for port in 50051 9101 50052 9102 9090; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    fail "host port $port is in use; compose publishes it (stop what listens there)"
  fi
done
podman image exists "$IMAGE" || fail "no image $IMAGE (run the build step)"

# Prometheus: the compose file pins prom/prometheus:v2.42.0, which cannot be
# pulled here. The stand-in is Debian's prometheus 2.42.0 (the same release)
# in debian:12-slim, with the upstream image's entrypoint, user and paths; it
# carries the compose tag only while the test runs.
if ! podman image exists "$PROM_IMAGE"; then
  if ! podman image exists "$PROM_STANDIN"; then
    log "prometheus: building the stand-in $PROM_STANDIN for $PROM_IMAGE"
    mkdir -p "$TMP/prom"
    cat >"$TMP/prom/Containerfile" <<'EOF'
FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o nobody -g nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF
    podman build --network=host -t "$PROM_STANDIN" "$TMP/prom" >"$WORK/prometheus-build.log" 2>&1 \
      || { tail -20 "$WORK/prometheus-build.log"; fail "building the Prometheus stand-in"; }
  fi
  version=$(run "$PROM_STANDIN" --version 2>&1 | sed -n 's/^prometheus, version \([0-9.]*\).*/\1/p')
  [[ "v$version" == "${PROM_IMAGE##*:}" ]] \
    || log "prometheus: stand-in is $version, compose pins ${PROM_IMAGE##*:}"
  podman tag "$PROM_STANDIN" "$PROM_IMAGE"
  PROM_TAGGED=1
fi

# 1. podman-compose creates the containers, network and volumes from the
#    unchanged docker-compose.yml (grafana: no image here; client: profile tools).
log "stack: podman-compose up --no-start optimizer bootstrap server prometheus (without -d: 1.0.3 passes it to podman create)"
compose up --no-start --no-build optimizer bootstrap server prometheus >"$WORK/compose-up.log" 2>&1 \
  || { cat "$WORK/compose-up.log"; fail "podman-compose up --no-start"; }
for c in "${CONTAINERS[@]}"; do
  podman container exists "$c" || { cat "$WORK/compose-up.log"; fail "podman-compose did not create $c"; }
done
# What podman-compose made of the compose keys.
[[ $(podman inspect --format '{{.HostConfig.Init}}' "$(cname server)") == true ]] || fail "server: init: true was not applied"
[[ $(podman inspect --format '{{.HostConfig.RestartPolicy.Name}}' "$(cname server)") == unless-stopped ]] \
  || fail "server: restart: unless-stopped was not applied"
podman inspect --format '{{range .Mounts}}{{.Destination}} rw={{.RW}}{{"\n"}}{{end}}' "$(cname server)" \
  | grep -qx '/var/lib/hapi/repository rw=false' || fail "server: the repository volume is not read-only"
log "stack: created ${CONTAINERS[*]} (init, restart policy, read-only repository for the server as in compose)"

# Runs a container's health check (the compose `healthcheck.test`) until it
# passes: podman schedules health checks with systemd timers, and there is no
# systemd here, so the test runs it itself, every second.
wait_healthy() {
  local c=$1 timeout=$2 t0 out
  t0=$SECONDS
  until out=$(podman healthcheck run "$c" 2>&1); do
    if [[ $(podman inspect --format '{{.State.Status}}' "$c") != running ]]; then
      fail "$c is $(podman inspect --format '{{.State.Status}} (exit {{.State.ExitCode}})' "$c") while waiting for healthy"
    fi
    ((SECONDS - t0 < timeout)) || fail "$c not healthy within ${timeout}s: $out"
    sleep 1
  done
}

# 2. depends_on order with its conditions, as docker compose does it.
T_OPT=$(now)
podman start "$(cname optimizer)" >/dev/null
wait_healthy "$(cname optimizer)" 60
result "optimizer start -> healthy" "$(since "$T_OPT") s"

T_BOOT=$(now)
podman start "$(cname bootstrap)" >/dev/null
code=$(podman wait "$(cname bootstrap)")
podman logs "$(cname bootstrap)" >"$TMP/bootstrap.log" 2>&1
[[ $code == 0 ]] || { cat "$TMP/bootstrap.log"; fail "bootstrap exited $code"; }
result "bootstrap (2 devices, 2 variants)" "$(since "$T_BOOT") s"
grep -q 'variant ' "$TMP/bootstrap.log" || { cat "$TMP/bootstrap.log"; fail "bootstrap built no variant"; }
sed 's/^/    bootstrap| /' "$TMP/bootstrap.log" | grep -E 'hapi-bootstrap:|^    bootstrap\| variant ' || true

T_SRV=$(now)
podman start "$(cname server)" >/dev/null
wait_healthy "$(cname server)" 90
result "server container start -> SERVING" "$(since "$T_SRV") s"

podman start "$(cname prometheus)" >/dev/null
wait_healthy "$(cname prometheus)" 60
log "stack: optimizer, server, prometheus healthy (compose health checks); bootstrap exited 0"

client() { # hapi-client from the image, on the host's network: through the published ports
  run --network=host "$@"
}
hc() { client "$IMAGE" hapi-client "$@"; }

# A container of a deploy/k8s manifest (file, kind, container name): its env as
# -e flags or its command + args (NUL-separated), or its pod's user:group
# (after checking the container's securityContext).
k8s_spec() {
  python3 - "$ROOT/deploy/k8s/$1" "$2" "$3" "$4" <<'PY'
import sys, yaml
path, kind, name, what = sys.argv[1:]
for doc in yaml.safe_load_all(open(path)):
    if not doc or doc.get("kind") != kind:
        continue
    spec = doc["spec"]["template"]["spec"]
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] != name:
            continue
        if what == "env":
            for e in c.get("env", []):
                sys.stdout.write(f"-e\0{e['name']}={e['value']}\0")
        elif what == "argv":
            for a in c.get("command", []) + c.get("args", []):
                sys.stdout.write(a + "\0")
        elif what == "security":
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False, sc
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], sc
            pod = spec["securityContext"]
            print(f"{pod['runAsUser']}:{pod['runAsGroup']}")
        sys.exit(0)
sys.exit(f"{path}: no {kind} container {name}")
PY
}
# 3. Classify through the published port: PNG files, then test images.
mkdir -p "$TMP/samples" && chmod 0777 "$TMP/samples"
client -v "$DATASET:$DATASET:ro" -v "$TMP/samples:/samples" "$IMAGE" \
  hapi-client export-samples --out=/samples --count=20 >/dev/null || fail "export-samples"
client -v "$TMP/samples:/samples:ro" "$IMAGE" hapi-client --target=127.0.0.1:50051 classify /samples \
  >"$TMP/classify-png.txt" || { cat "$TMP/classify-png.txt"; fail "classify PNG files through 127.0.0.1:50051"; }
n=$(grep -c ' exit ' "$TMP/classify-png.txt" || true)
[[ $n == 20 ]] || { cat "$TMP/classify-png.txt"; fail "classify: $n answers for 20 PNG files"; }
head -n 2 "$TMP/classify-png.txt" | sed 's/^/    /'
client -v "$DATASET:$DATASET:ro" "$IMAGE" hapi-client --target=127.0.0.1:50051 classify --idx 500 \
  >"$TMP/classify-idx.txt" || fail "classify --idx 500"
acc=$(sed -n 's/^accuracy \([0-9.]*\)%.*/\1/p' "$TMP/classify-idx.txt")
if [[ -z $acc ]] || ! awk -v a="$acc" 'BEGIN { exit !(a >= 80) }'; then
  tail -3 "$TMP/classify-idx.txt"
  fail "classify --idx 500: accuracy '$acc', want >= 80%"
fi
result "classify 500 test images" "accuracy $acc% through 127.0.0.1:50051"

# 4. A new variant from the optimizer; the server swaps to it by itself.
before=$(hc --target=127.0.0.1:50051 status | sed -n 's/^variant: "\(.*\)"$/\1/p')
hc --target=127.0.0.1:50052 variants create --device=cpu-standard --objective=min-latency --max-drop=1.0 \
  --statistic=mean --watch >"$TMP/variant.txt" 2>&1 || { cat "$TMP/variant.txt"; fail "variants create"; }
new=$(sed -n 's/^variant \(.*\)$/\1/p' "$TMP/variant.txt" | tail -n 1)
[[ -n $new && $new != "$before" ]] || { cat "$TMP/variant.txt"; fail "no new variant (before: $before)"; }
T_SWAP=$(now)
until hc --target=127.0.0.1:50051 status >"$TMP/status.txt" 2>&1 && grep -q "^variant: \"$new\"" "$TMP/status.txt"; do
  awk -v t="$(since "$T_SWAP")" 'BEGIN { exit !(t > 60) }' && { cat "$TMP/status.txt"; fail "server did not swap to $new within 60 s"; }
  sleep 1
done
result "variant swap (job done -> serving)" "$(since "$T_SWAP") s ($before -> $new)"
client -v "$TMP/samples:/samples:ro" "$IMAGE" hapi-client --target=127.0.0.1:50051 classify /samples >/dev/null \
  || fail "classify after the swap"

# 5. /metrics of both through the published ports.
curl -fsS http://127.0.0.1:9101/metrics >"$TMP/server.metrics" || fail "GET 127.0.0.1:9101/metrics"
curl -fsS http://127.0.0.1:9102/metrics >"$TMP/optimizer.metrics" || fail "GET 127.0.0.1:9102/metrics"
grep -q "^hapi_variant_info{.*variant=\"$new\".*} 1" "$TMP/server.metrics" || fail "server /metrics: hapi_variant_info of $new"
grep -q '^hapi_requests_total{' "$TMP/server.metrics" || fail "server /metrics: no hapi_requests_total"
grep -q '^hapi_optimizer_jobs_total{' "$TMP/optimizer.metrics" || fail "optimizer /metrics: no hapi_optimizer_jobs_total"
log "metrics: server serves $new; requests and optimizer jobs counted"

# 6. Prometheus with the compose configuration: every target up, rules loaded.
T_PROM=$(now)
until curl -fsS http://127.0.0.1:9090/api/v1/targets >"$TMP/targets.json" 2>/dev/null && python3 - "$TMP/targets.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["data"]["activeTargets"]
up = {}
for x in t:
    up.setdefault(x["labels"]["job"], []).append(x["health"])
want = {"hapi-server", "hapi-optimizer", "prometheus"}
sys.exit(0 if want <= set(up) and all(h == "up" for j in want for h in up[j]) else 1)
EOF
do
  awk -v t="$(since "$T_PROM")" 'BEGIN { exit !(t > 90) }' && { cat "$TMP/targets.json"; fail "Prometheus targets not all up within 90 s"; }
  sleep 2
done
python3 - "$TMP/targets.json" <<'EOF'
import json, sys
for x in json.load(open(sys.argv[1]))["data"]["activeTargets"]:
    print(f"    target {x['labels']['job']:15s} {x['scrapeUrl']:40s} {x['health']}")
EOF
result "prometheus targets up" "$(since "$T_PROM") s after the checks above"
sleep 16  # one evaluation interval: the rules have run
curl -fsS http://127.0.0.1:9090/api/v1/rules >"$TMP/rules.json" || fail "GET /api/v1/rules"
python3 - "$TMP/rules.json" <<'EOF' || fail "Prometheus rules"
import json, sys
rules = [r for g in json.load(open(sys.argv[1]))["data"]["groups"] for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") not in ("ok", "unknown")]
if not rules or bad:
    sys.exit(f"rules: {len(rules)} loaded, failing: {bad}")
print(f"    {len(rules)} rules loaded from alerts.yml, none failing")
EOF
curl -fsS "http://127.0.0.1:9090/api/v1/query?query=hapi_variant_info" | grep -q "\"variant\":\"$new\"" \
  || fail "Prometheus: hapi_variant_info of $new not scraped"

# 7. The Kubernetes workloads of deploy/k8s on podman (no cluster), each with
#    its manifest's command, args, env and securityContext (uid 10001,
#    read-only root filesystem, no capabilities, no privilege escalation, the
#    emptyDir /tmp as a tmpfs), on two empty volumes owned by uid 10001 as
#    fsGroup makes a PersistentVolume (no copy-up from the image, unlike a
#    Docker named volume), reachable under their Service names:
#    optimizer.yaml; bootstrap-job.yaml with kustomization.yaml's ConfigMaps
#    (seeds the model, registers the profiles, builds the variants; run twice:
#    the second changes nothing); server.yaml's init container, then its
#    server, healthy on grpc.health.v1 (what the native gRPC probes ask), and
#    classifying.
k8s_user=$(k8s_spec optimizer.yaml Deployment hapi-optimizer security) || fail "deploy/k8s/optimizer.yaml: securityContext"
K8S_SECURITY=(--user "$k8s_user" --read-only --read-only-tmpfs=false --cap-drop=ALL --security-opt=no-new-privileges)
for v in "$K8S_REPOSITORY" "$K8S_STATE"; do
  podman volume create "$v" >/dev/null
  chown "$k8s_user" "$(podman volume inspect --format '{{.Mountpoint}}' "$v")"
done
k8s_repo_dir=$(podman volume inspect --format '{{.Mountpoint}}' "$K8S_REPOSITORY")

mapfile -d "" -t OPT_ENV < <(k8s_spec optimizer.yaml Deployment hapi-optimizer env)
mapfile -d "" -t OPT_CMD < <(k8s_spec optimizer.yaml Deployment hapi-optimizer argv)
((${#OPT_CMD[@]} > 0)) || fail "deploy/k8s/optimizer.yaml: no command"
podman run -d --name "${PROJECT}-k8s-optimizer" --network "$NETWORK" --network-alias hapi-optimizer \
  "${K8S_SECURITY[@]}" --tmpfs /tmp "${OPT_ENV[@]}" \
  --health-cmd 'hapi-client --target=127.0.0.1:50052 --timeout=3 health' \
  -v "$K8S_REPOSITORY:/var/lib/hapi/repository:nocopy" -v "$K8S_STATE:/var/lib/hapi/state:nocopy" \
  "$IMAGE" "${OPT_CMD[@]}" >/dev/null || fail "optimizer.yaml's container did not start"
CONTAINERS+=("${PROJECT}-k8s-optimizer")
wait_healthy "${PROJECT}-k8s-optimizer" 60

[[ $(k8s_spec bootstrap-job.yaml Job bootstrap security) == "$k8s_user" ]] || fail "bootstrap-job.yaml: securityContext"
mapfile -d "" -t JOB_ENV < <(k8s_spec bootstrap-job.yaml Job bootstrap env)
mapfile -d "" -t JOB_CMD < <(k8s_spec bootstrap-job.yaml Job bootstrap argv)
((${#JOB_CMD[@]} > 0)) || fail "deploy/k8s/bootstrap-job.yaml: no command"
# kustomization.yaml's configMapGenerator: hapi-bootstrap (envFrom) and the
# files of hapi-device-profiles (mounted at /etc/hapi/devices).
mkdir -p "$TMP/k8s-devices"
mapfile -d "" -t JOB_CONFIG < <(python3 - "$ROOT/deploy/k8s" "$TMP/k8s-devices" <<'PY'
import os, shutil, sys, yaml
k8s, devices = sys.argv[1:]
for g in yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))["configMapGenerator"]:
    if g["name"] == "hapi-bootstrap":
        for lit in g.get("literals", []):
            sys.stdout.write(f"-e\0{lit}\0")
    if g["name"] == "hapi-device-profiles":
        for f in g.get("files", []):
            shutil.copy(os.path.join(k8s, f), devices)
PY
)
((${#JOB_CONFIG[@]} > 0)) || fail "deploy/k8s/kustomization.yaml: no hapi-bootstrap ConfigMap literals"
chmod -R a+rX "$TMP/k8s-devices"
k8s_job() {
  run --name "${PROJECT}-k8s-bootstrap" --network "$NETWORK" "${K8S_SECURITY[@]}" \
    "${JOB_ENV[@]}" "${JOB_CONFIG[@]}" -v "$TMP/k8s-devices:/etc/hapi/devices:ro" \
    -v "$K8S_REPOSITORY:/var/lib/hapi/repository:nocopy" "$IMAGE" "${JOB_CMD[@]}"
}
T_JOB=$(now)
k8s_job >"$TMP/job1.log" 2>&1 || { cat "$TMP/job1.log"; fail "bootstrap-job.yaml on an empty volume"; }
grep -q 'seeded model fmnist-resnet' "$TMP/job1.log" || { cat "$TMP/job1.log"; fail "the Job did not seed the model"; }
[[ $(grep -c '^variant ' "$TMP/job1.log") == "$(find "$TMP/k8s-devices" -name '*.pbtxt' | wc -l)" ]] \
  || { cat "$TMP/job1.log"; fail "the Job did not build a variant per device profile"; }
[[ $(stat -c %u "$k8s_repo_dir/models/fmnist-resnet/manifest.pbtxt") == "${k8s_user%%:*}" ]] \
  || fail "seeded model not owned by uid ${k8s_user%%:*}"
result "k8s Job on an empty volume" "$(since "$T_JOB") s (seeded the model, $(grep -c '^variant ' "$TMP/job1.log") variants)"
k8s_job >"$TMP/job2.log" 2>&1 || { cat "$TMP/job2.log"; fail "second run of the Job"; }
if ! grep -q 'model fmnist-resnet already in' "$TMP/job2.log" || grep -q '^variant ' "$TMP/job2.log"; then
  cat "$TMP/job2.log"
  fail "the second run of the Job was not a no-op"
fi

mapfile -d "" -t INIT_CMD < <(k8s_spec server.yaml Deployment wait-for-variant argv)
mapfile -d "" -t SRV_ENV < <(k8s_spec server.yaml Deployment hapi-server env)
mapfile -d "" -t SRV_CMD < <(k8s_spec server.yaml Deployment hapi-server argv)
((${#SRV_CMD[@]} > 0 && ${#INIT_CMD[@]} > 0)) || fail "deploy/k8s/server.yaml: no command"
[[ $(k8s_spec server.yaml Deployment wait-for-variant security) == "$k8s_user" ]] || fail "server.yaml: init container securityContext"
[[ $(k8s_spec server.yaml Deployment hapi-server security) == "$k8s_user" ]] || fail "server.yaml: securityContext"
timeout 30 podman run --rm --no-healthcheck "${K8S_SECURITY[@]}" -v "$K8S_REPOSITORY:/var/lib/hapi/repository:ro" \
  "$IMAGE" "${INIT_CMD[@]}" >/dev/null || fail "server.yaml's init container wait-for-variant did not finish"
T_K8S=$(now)
podman run -d --name "${PROJECT}-k8s-server" --network "$NETWORK" --network-alias hapi-server \
  "${K8S_SECURITY[@]}" --tmpfs /tmp "${SRV_ENV[@]}" -v "$K8S_REPOSITORY:/var/lib/hapi/repository:ro" \
  "$IMAGE" "${SRV_CMD[@]}" >/dev/null || fail "server.yaml's container did not start"
CONTAINERS+=("${PROJECT}-k8s-server")
wait_healthy "${PROJECT}-k8s-server" 90
result "k8s server pod start -> SERVING" "$(since "$T_K8S") s"
run --network "$NETWORK" -v "$TMP/samples:/samples:ro" "$IMAGE" hapi-client --target=hapi-server:50051 \
  classify /samples >"$TMP/classify-k8s.txt" || { cat "$TMP/classify-k8s.txt"; fail "classify through the k8s server"; }
[[ $(grep -c ' exit ' "$TMP/classify-k8s.txt") == 20 ]] || fail "k8s server: not 20 answers"
for c in "${PROJECT}-k8s-server" "${PROJECT}-k8s-optimizer"; do podman rm -f -t 10 "$c" >/dev/null; done
log "k8s: optimizer, Job (twice) and server pod ran from the manifests' specs on empty volumes"

# 8. Stop: SIGTERM reaches hapi-server through the init process; it exits
#    before podman's 10 s timeout would kill it.
T_STOP=$(now)
podman stop -t 10 "$(cname server)" >/dev/null
stop_s=$(since "$T_STOP")
code=$(podman inspect --format '{{.State.ExitCode}}' "$(cname server)")
awk -v t="$stop_s" 'BEGIN { exit !(t < 9) }' || fail "server took ${stop_s}s to stop (SIGTERM not handled?)"
result "server stop (SIGTERM)" "$stop_s s, exit code $code"

log "PASS: image built and checked; compose stack healthy, seeded, classified, swapped, scraped"
echo "---- results ($RESULTS)"
cat "$RESULTS"
