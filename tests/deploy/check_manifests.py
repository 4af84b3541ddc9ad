#!/usr/bin/env python3
"""Static checks of the deployment files (ctest: deploy_manifests).

Parses every YAML file under deploy/ and docker-compose.yml (yaml.safe_load_all)
and every JSON file under deploy/ (json), then checks that they agree with each
other and with the code:
  * every --flag given to hapi-server / hapi-optimizer / hapi-client exists
    (from the binaries' --helpfull / --help), and every port a container
    publishes, exposes or is probed on is one the process listens on (explicit
    --listen / --metrics_address, else the flag's default);
  * every bind-mount source, Dockerfile COPY source, rule file, generator file,
    dashboard path is a file or directory that exists;
  * Prometheus targets name compose services on their metrics ports; Grafana's
    datasource names the Prometheus service; the dashboard is well formed and
    uses only metrics the server and optimizer export;
  * the Dockerfile builds the targets scripts/main.sh builds, its build stage
    COPYs every directory the top-level CMakeLists.txt enters, and its runtime
    packages are real, installed here, and provide every shared library the
    binaries need (directly, and through their Depends when apt lists exist);
  * the Kubernetes manifests (rendered with `kubectl kustomize` when kubectl is
    installed) reference existing objects, ports, claims and config maps, and
    probe the gRPC port with grpc.health.v1;
  * the healthcheck commands parse (they fail with UNAVAILABLE, not a usage
    error, against a closed port).
"""

import argparse
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_util  # noqa: E402

errors = []


def error(msg):
    errors.append(msg)
    print(f"  ERROR: {msg}")


def ok(msg):
    print(f"  ok: {msg}")


# --- what the binaries accept ---------------------------------------------------
class Binary:
    def __init__(self, path, kind):
        self.path = path
        self.flags = {}
        if kind == "absl":
            out = subprocess.run([path, "--helpfull"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=60).stdout
            for m in re.finditer(r"--(\w+) \((?:[^;]|;(?!\s+default:))*?\);\s+default: ([^;]*);", out):
                self.flags[m.group(1)] = m.group(2).strip().strip('"')
        else:  # CLI11
            out = subprocess.run([path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=60).stdout
            for m in re.finditer(r"--(\w+)(?: \w+)?(?:=(\S+))?", out):
                self.flags[m.group(1)] = m.group(2) or ""
        if not self.flags:
            raise SystemExit(f"could not read the flags of {path}")

    def check_args(self, where, args):
        for a in args:
            if a.startswith("--"):
                name = a[2:].split("=", 1)[0]
                if name not in self.flags:
                    error(f"{where}: {os.path.basename(self.path)} has no flag --{name}")

    def ports(self, args):
        """{'grpc': port, 'metrics': port} from --listen / --metrics_address or defaults."""
        values = {k: self.flags.get(k, "") for k in ("listen", "metrics_address")}
        for a in args:
            for k in values:
                if a.startswith(f"--{k}="):
                    values[k] = a.split("=", 1)[1]
        out = {}
        for k, name in (("listen", "grpc"), ("metrics_address", "metrics")):
            if values[k]:
                out[name] = int(values[k].rsplit(":", 1)[1])
        return out


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check_client_command(where, argv, client):
    """A hapi-client health check: flags exist, and against a closed port it
    fails at the RPC (UNAVAILABLE), not in argument parsing."""
    args = [a for a in argv[1:]]
    client.check_args(where, [a for a in args if a.startswith("--")])
    target = next((a.split("=", 1)[1] for a in args if a.startswith("--target=")), None)
    if target is None:
        error(f"{where}: hapi-client health check without --target")
        return None
    probe = [client.path] + [f"--target=127.0.0.1:{closed_port()}" if a.startswith("--target=") else a
                             for a in args]
    p = subprocess.run(probe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    if p.returncode == 0 or "UNAVAILABLE" not in p.stdout:
        error(f"{where}: `{' '.join(argv)}` against a closed port should fail with UNAVAILABLE; "
              f"got code {p.returncode}: {p.stdout.strip()[:300]}")
    return int(target.rsplit(":", 1)[1])


# --- metrics the code exports ---------------------------------------------------
def exported_metrics(source):
    names = set()
    for f in ("server/metrics.cc", "optimizer/metrics.cc"):
        text = open(os.path.join(source, f)).read()
        for m in re.finditer(r'Build(Counter|Gauge|Histogram|Summary)\(\)\s*\.Name\("(\w+)"\)', text):
            kind, name = m.groups()
            if kind == "Histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            else:
                names.add(name)
    return names


# Metric names, not parts of recording-rule names (level:metric:operations).
METRIC_RE = re.compile(r"(?<![\w:])(hapi_[a-z0-9_]+)\b(?!:)")


def check_metric_names(where, expr, exported):
    for name in set(METRIC_RE.findall(expr)):
        if name not in exported:
            error(f"{where}: metric {name} is not exported by server/metrics.cc or optimizer/metrics.cc")


# --- YAML / JSON ----------------------------------------------------------------
def parse_all(source):
    files = [os.path.join(source, "docker-compose.yml")]
    for ext in ("yml", "yaml"):
        files += glob.glob(os.path.join(source, "deploy", "**", f"*.{ext}"), recursive=True)
    docs = {}
    for f in sorted(files):
        rel = os.path.relpath(f, source)
        try:
            with open(f) as fh:
                docs[rel] = [d for d in yaml.safe_load_all(fh) if d is not None]
            ok(f"YAML {rel} ({len(docs[rel])} document(s))")
        except yaml.YAMLError as e:
            error(f"{rel}: not valid YAML: {e}")
    for f in sorted(glob.glob(os.path.join(source, "deploy", "**", "*.json"), recursive=True)):
        rel = os.path.relpath(f, source)
        try:
            with open(f) as fh:
                docs[rel] = [json.load(fh)]
            ok(f"JSON {rel}")
        except json.JSONDecodeError as e:
            error(f"{rel}: not valid JSON: {e}")
    return docs


# --- docker-compose.yml ---------------------------------------------------------
def command_list(cmd):
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def published_ports(entries):
    out = []
    for e in entries or []:
        if isinstance(e, dict):
            out.append(int(e["target"]))
            continue
        container = str(e).split("/")[0].rsplit(":", 1)[-1]
        out.append(int(container))
    return out


def check_compose(source, compose, binaries, client):
    print("docker-compose.yml")
    services = compose.get("services", {})
    named_volumes = set((compose.get("volumes") or {}).keys())
    for required in ("optimizer", "server", "prometheus", "grafana"):
        if required not in services:
            error(f"docker-compose.yml: no service {required}")
    listening = {}  # service -> {name: port}
    mounts = {}     # service -> [(host path or None, container path)]
    for name, svc in services.items():
        where = f"docker-compose.yml services.{name}"
        cmd = command_list(svc.get("entrypoint")) + command_list(svc.get("command"))
        if svc.get("build"):
            ctx = os.path.join(source, svc["build"].get("context", "."))
            dockerfile = os.path.join(ctx, svc["build"].get("dockerfile", "Dockerfile"))
            if not os.path.isfile(dockerfile):
                error(f"{where}: build dockerfile {dockerfile} does not exist")
        image = svc.get("image", "")
        ports = {}
        if cmd and cmd[0] in binaries:
            binaries[cmd[0]].check_args(where, cmd[1:])
            ports = binaries[cmd[0]].ports(cmd[1:])
        elif image.startswith("prom/prometheus"):
            addr = next((a.split("=", 1)[1] for a in cmd if a.startswith("--web.listen-address=")), ":9090")
            ports = {"web": int(addr.rsplit(":", 1)[1])}
        elif image.startswith("grafana/grafana"):
            ports = {"web": int((svc.get("environment") or {}).get("GF_SERVER_HTTP_PORT", 3000))}
        listening[name] = ports
        for p in published_ports(svc.get("ports")):
            if p not in ports.values():
                error(f"{where}: publishes container port {p}, but the service listens on {ports}")
        mounts[name] = []
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                src, dst = v.get("source"), v["target"]
            else:
                parts = v.split(":")
                src, dst = parts[0], parts[1]
            if src.startswith(("./", "/", "../")):
                host = os.path.normpath(os.path.join(source, src))
                if not os.path.exists(host):
                    error(f"{where}: bind-mount source {src} does not exist")
                mounts[name].append((host, dst))
            else:
                if src not in named_volumes:
                    error(f"{where}: named volume {src} is not declared under volumes:")
                mounts[name].append((None, dst))
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                error(f"{where}: depends_on unknown service {dep}")
        hc = (svc.get("healthcheck") or {})
        if name in ("optimizer", "server", "prometheus", "grafana") and not hc.get("test"):
            error(f"{where}: no healthcheck")
        test = hc.get("test")
        if test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shlex.split(test[1])
            if argv[0] == "hapi-client":
                port = check_client_command(f"{where} healthcheck", argv, client)
                if port is not None and port != ports.get("grpc"):
                    error(f"{where}: healthcheck targets port {port}, the service's gRPC port is {ports.get('grpc')}")
            for url in [a for a in argv if a.startswith("http://")]:
                port = int(re.match(r"http://[^:/]+:(\d+)", url).group(1))
                if port not in ports.values():
                    error(f"{where}: healthcheck URL {url} is not on a port the service listens on ({ports})")
        # Container paths named in the command must be mounted from files that exist.
        for a in cmd:
            value = a.split("=", 1)[1] if a.startswith("--") and "=" in a else a
            for host, dst in mounts[name]:
                if host and value.startswith(dst.rstrip("/") + "/"):
                    if not os.path.exists(os.path.join(host, value[len(dst.rstrip('/')) + 1:])):
                        error(f"{where}: {value} is not in the mounted {os.path.relpath(host, source)}")
    ok(f"services {sorted(services)}; listening {listening}")
    # The Compose schema itself, when a compose implementation is installed
    # (it is not a project dependency: no Docker engine is needed to build or test).
    for cli in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cli[0]) or subprocess.run(cli + ["version"], stdout=subprocess.DEVNULL,
                                                      stderr=subprocess.DEVNULL).returncode != 0:
            continue
        p = subprocess.run(cli + ["-f", os.path.join(source, "docker-compose.yml"), "config", "-q"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        if p.returncode == 0:
            ok(f"`{' '.join(cli)} config -q` accepts docker-compose.yml")
            break
        error(f"`{' '.join(cli)} config` rejects docker-compose.yml: {p.stdout.strip()[-1500:]}")
        break
    return services, listening, mounts


def container_to_host(mounts, path):
    for host, dst in mounts:
        if host and (path == dst or path.startswith(dst.rstrip("/") + "/")):
            return os.path.join(host, path[len(dst):].lstrip("/"))
    return None


def profile_names(source):
    names = {}
    for f in sorted(glob.glob(os.path.join(source, "deploy/k8s/devices/*.pbtxt"))):
        text = open(f).read()
        m = re.search(r'^name: "([^"]+)"', text, re.M)
        model = re.search(r'^model: "([^"]+)"', text, re.M)
        macs = re.search(r"^model_macs: (\d+)", text, re.M)
        stem = os.path.basename(f)[:-len(".pbtxt")]
        if not m or m.group(1) != stem:
            error(f"{os.path.relpath(f, source)}: profile name must equal the file name ({stem})")
            continue
        names[stem] = (model.group(1) if model else None, int(macs.group(1)) if macs else None)
        manifest = os.path.join(source, "repository/models", names[stem][0] or "?", "manifest.pbtxt")
        if os.path.isfile(manifest):
            full = re.search(r"^full_network_macs: (\d+)", open(manifest).read(), re.M)
            if full and int(full.group(1)) != names[stem][1]:
                error(f"{os.path.relpath(f, source)}: model_macs {names[stem][1]} differs from the shipped "
                      f"model's full_network_macs {full.group(1)}: regenerate the profile with hapi-profile")
            else:
                ok(f"device profile {stem} matches the shipped model {names[stem][0]}")
        else:
            print(f"  note: {manifest} absent; profile {stem} not compared with the model")
    return names


def check_compose_semantics(source, services, listening, mounts, devices):
    srv = services.get("server", {})
    cmd = command_list(srv.get("command"))
    dev = next((a.split("=", 1)[1] for a in cmd if a.startswith("--device=")), None)
    if not dev:
        error("docker-compose.yml services.server: must serve with --device=<name> (newest variant of the device)")
    elif dev not in devices:
        error(f"docker-compose.yml services.server: --device={dev} has no profile in deploy/k8s/devices")
    bs = services.get("bootstrap")
    if bs:
        env = bs.get("environment") or {}
        pdir = env.get("HAPI_DEVICE_PROFILES", "/etc/hapi/devices")
        host = container_to_host(mounts["bootstrap"], pdir)
        if not host or not glob.glob(os.path.join(host, "*.pbtxt")):
            error(f"docker-compose.yml services.bootstrap: {pdir} is not mounted from a directory of profiles")
        addr = env.get("HAPI_OPTIMIZER", "optimizer:50052")
        h, p = addr.rsplit(":", 1)
        if h not in services or int(p) != listening.get(h, {}).get("grpc"):
            error(f"docker-compose.yml services.bootstrap: HAPI_OPTIMIZER={addr} is not the optimizer's gRPC port")
    # The repository volume is shared by optimizer and server, read-only on the server.
    def repo_mount(name):
        for v in services.get(name, {}).get("volumes") or []:
            if isinstance(v, str) and v.split(":")[1] == "/var/lib/hapi/repository":
                return v
        return None
    o, s = repo_mount("optimizer"), repo_mount("server")
    if not o or not s or o.split(":")[0] != s.split(":")[0]:
        error("docker-compose.yml: optimizer and server must share one repository volume at /var/lib/hapi/repository")
    elif not s.endswith(":ro"):
        error("docker-compose.yml: the server should mount the repository read-only")
    else:
        ok(f"shared repository volume '{o.split(':')[0]}' (server read-only), server --device={dev}")


# --- Prometheus -----------------------------------------------------------------
def check_prometheus(source, config, services, listening, mounts, exported):
    print("deploy/prometheus")
    cfg_dir = os.path.join(source, "deploy/prometheus")
    for rf in config.get("rule_files", []):
        if not os.path.isfile(os.path.join(cfg_dir, rf)):
            error(f"prometheus.yml: rule file {rf} does not exist")
    jobs = {j["job_name"]: j for j in config.get("scrape_configs", [])}
    expected = {"hapi-server": "server", "hapi-optimizer": "optimizer"}
    for job, service in expected.items():
        if job not in jobs:
            error(f"prometheus.yml: no scrape job {job} (the alert rules select on it)")
            continue
        j = jobs[job]
        targets = [t for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
        for sd in j.get("dns_sd_configs", []):
            targets += [f"{n}:{sd['port']}" for n in sd.get("names", [])]
        if not targets:
            error(f"prometheus.yml job {job}: no targets")
        for t in targets:
            host, port = t.rsplit(":", 1)
            if host != service or int(port) != listening.get(service, {}).get("metrics"):
                error(f"prometheus.yml job {job}: target {t} is not compose service {service} on its "
                      f"metrics port {listening.get(service, {}).get('metrics')}")
        ok(f"job {job} -> {targets}")
    prom = services.get("prometheus", {})
    cmd = command_list(prom.get("command"))
    cfg = next((a.split("=", 1)[1] for a in cmd if a.startswith("--config.file=")), "/etc/prometheus/prometheus.yml")
    host = container_to_host(mounts.get("prometheus", []), cfg)
    if not host or os.path.realpath(host) != os.path.realpath(os.path.join(cfg_dir, "prometheus.yml")):
        error(f"docker-compose.yml prometheus: {cfg} is not deploy/prometheus/prometheus.yml")

    rules = deploy_util.load_rules(os.path.join(cfg_dir, "alerts.yml"))
    alerts = [r for _, r in rules if "alert" in r]
    for _, r in rules:
        check_metric_names(f"alerts.yml {r.get('alert') or r.get('record')}", r["expr"], exported)
    for r in alerts:
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            error(f"alerts.yml {r['alert']}: needs a severity label (critical/warning/info)")
        for a in ("summary", "description"):
            if not r.get("annotations", {}).get(a):
                error(f"alerts.yml {r['alert']}: needs a {a} annotation")
    wanted = {"HapiSlaLatencyBreached", "HapiSlaViolationsHigh", "HapiExitRatioDrift", "HapiHighErrorRate",
              "HapiQueueSaturated", "HapiQueueWaitHigh", "HapiServerDown"}
    missing = wanted - {r["alert"] for r in alerts}
    if missing:
        error(f"alerts.yml: missing alerts {sorted(missing)}")
    ok(f"{len(alerts)} alerts, {len(rules) - len(alerts)} recording rules, metric names exported by the code")
    return config


# --- Grafana --------------------------------------------------------------------
def check_grafana(source, docs, services, listening, mounts, scrape_interval, exported):
    print("deploy/grafana")
    ds_docs = docs.get("deploy/grafana/provisioning/datasources/prometheus.yml", [{}])[0]
    uids = set()
    for ds in ds_docs.get("datasources", []):
        uids.add(ds.get("uid"))
        m = re.match(r"https?://([^:/]+):(\d+)", ds.get("url", ""))
        if not m or m.group(1) not in services or int(m.group(2)) not in listening.get(m.group(1), {}).values():
            error(f"grafana datasource {ds.get('name')}: url {ds.get('url')} is not a compose service port")
        if ds.get("jsonData", {}).get("timeInterval") != scrape_interval:
            error(f"grafana datasource: jsonData.timeInterval should equal Prometheus's scrape_interval ({scrape_interval})")
    prov = docs.get("deploy/grafana/provisioning/dashboards/hapi.yml", [{}])[0]
    dashboards = []
    for p in prov.get("providers", []):
        path = p.get("options", {}).get("path")
        host = container_to_host(mounts.get("grafana", []), path or "")
        if not host or not glob.glob(os.path.join(host, "*.json")):
            error(f"grafana dashboard provider path {path} is not mounted from a directory of dashboards")
        else:
            dashboards += glob.glob(os.path.join(host, "*.json"))
    # Without a provisioned datasource or dashboard the checks below have nothing to check.
    if not uids:
        error("deploy/grafana/provisioning/datasources/prometheus.yml: no datasource")
    if not dashboards:
        error("deploy/grafana/provisioning/dashboards/hapi.yml: no dashboard provisioned")
    home = (services.get("grafana", {}).get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and not (container_to_host(mounts.get("grafana", []), home) and
                     os.path.isfile(container_to_host(mounts.get("grafana", []), home))):
        error(f"grafana: GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH {home} is not a mounted file")

    for path in dashboards:
        d = json.load(open(path))
        rel = os.path.relpath(path, source)
        variables = {v["name"] for v in deploy_util.template_variables(d)}
        ids, cells = set(), {}
        for p in deploy_util.dashboard_panels(d):
            where = f"{rel} panel '{p.get('title')}'"
            if p.get("id") in ids:
                error(f"{where}: duplicate id {p.get('id')}")
            ids.add(p.get("id"))
            g = p.get("gridPos", {})
            if g.get("x", 0) + g.get("w", 0) > 24 or g.get("w", 0) <= 0 or g.get("h", 0) <= 0:
                error(f"{where}: gridPos {g} out of the 24-column grid")
            for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
                for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                    if (x, y) in cells:
                        error(f"{where}: overlaps panel '{cells[(x, y)]}'")
                        break
                    cells[(x, y)] = p.get("title")
                else:
                    continue
                break
            if p.get("type") == "row":
                continue
            uid = (p.get("datasource") or {}).get("uid", "")
            if uid not in uids and uid != "${datasource}":
                error(f"{where}: datasource uid {uid!r} is neither provisioned nor the $datasource variable")
            if p.get("repeat") and p["repeat"] not in variables:
                error(f"{where}: repeats over undefined variable ${p['repeat']}")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if len(refs) != len(set(refs)) or not refs:
                error(f"{where}: targets need unique refIds, got {refs}")
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                check_metric_names(where, expr, exported)
                for v in re.findall(r"\$\{?(\w+)", expr):
                    if v not in variables and v not in deploy_util.GRAFANA_BUILTINS:
                        error(f"{where}: uses undefined variable ${v}")
        for v in deploy_util.template_variables(d):
            if v.get("type") == "query":
                q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
                if not q.startswith("label_values("):
                    error(f"{rel}: variable ${v['name']}: only label_values() queries are checked live")
                check_metric_names(f"{rel} variable ${v['name']}", q, exported)
        if d.get("templating") and "datasource" in variables:
            cur = next(v for v in deploy_util.template_variables(d) if v["name"] == "datasource")
            if cur.get("current", {}).get("value") not in uids:
                error(f"{rel}: $datasource default {cur.get('current')} is not the provisioned uid {uids}")
        titles = " | ".join(p.get("title", "") for p in deploy_util.dashboard_panels(d)).lower()
        for needed in ("requests per second", "latency", "exit distribution", "observed vs predicted",
                       "confidence", "queue", "batch", "variant", "jobs", "designs evaluated"):
            if needed not in titles:
                error(f"{rel}: no panel about '{needed}'")
        ok(f"dashboard {rel}: {len(ids)} panels, {len(deploy_util.dashboard_queries(d))} queries, "
           f"variables {sorted(variables)}")


# --- Dockerfile -----------------------------------------------------------------
def dockerfile_instructions(path):
    lines, cur = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        lines.append(cur.strip())
        cur = ""
    out = []
    for l in lines:
        op, _, rest = l.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def dockerignore_patterns(source):
    path = os.path.join(source, ".dockerignore")
    if not os.path.isfile(path):
        return []
    return [l.strip() for l in open(path) if l.strip() and not l.startswith("#")]


def ignored(rel, patterns):
    parts = rel.strip("/").split("/")
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, p) or (p.startswith("**/") and fnmatch.fnmatch(parts[i - 1], p[3:])):
                result = not neg
                break
    return result


def check_dockerfile(source, binaries, client, target_files, build_dir):
    print("Dockerfile")
    path = os.path.join(source, "Dockerfile")
    ins = dockerfile_instructions(path)
    patterns = dockerignore_patterns(source)
    stages = [(rest.split()[0], rest.split()[2] if len(rest.split()) > 2 else None) for op, rest in ins if op == "FROM"]
    if stages[:1] != [("debian:12", "build")] or not stages or stages[-1][0] != "debian:12-slim":
        error(f"Dockerfile: stages {stages}: want FROM debian:12 AS build ... FROM debian:12-slim")
    main_sh = open(os.path.join(source, "scripts/main.sh")).read()
    m = re.search(r"bash scripts/build\.sh ([^\n]+)", main_sh)
    main_targets = m.group(1).split() if m else []
    run_text = " ".join(rest for op, rest in ins if op == "RUN")
    if "bash scripts/install-deps.sh" not in run_text:
        error("Dockerfile: the build stage must run `bash scripts/install-deps.sh`")
    m = re.search(r"bash scripts/build\.sh ([\w\- ]+)", run_text)
    if not m or m.group(1).split() != main_targets:
        error(f"Dockerfile: must build the targets of scripts/main.sh ({main_targets}), "
              f"got {m.group(1).split() if m else None}")
    stage_names = {s[1] for s in stages if s[1]}
    runtime_packages = []
    for op, rest in ins:
        if op in ("COPY", "ADD"):
            words = shlex.split(rest)
            opts = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            srcs = paths[:-1]
            from_stage = next((o.split("=", 1)[1] for o in opts if o.startswith("--from=")), None)
            if from_stage:
                if from_stage not in stage_names:
                    error(f"Dockerfile: COPY --from={from_stage}: no such stage")
                for s in srcs:
                    if s.startswith("/src/build/"):
                        rel = s[len("/src/build/"):]
                        if rel not in target_files:
                            error(f"Dockerfile: COPY {s}: not a binary the build makes ({sorted(target_files)})")
                    elif s.startswith("/src/"):
                        rel = s[len("/src/"):]
                        if not os.path.exists(os.path.join(source, rel)) and "hapi-train" not in run_text:
                            error(f"Dockerfile: COPY {s}: {rel} is neither in the repository nor made by the build")
                continue
            for s in srcs:
                if s == ".":
                    continue
                if not glob.glob(os.path.join(source, s)):
                    error(f"Dockerfile: COPY source {s} does not exist")
                elif ignored(s, patterns):
                    error(f"Dockerfile: COPY source {s} is excluded by .dockerignore")
        if op == "RUN" and "apt-get install" in rest and "install-deps" not in rest:
            after = rest.split("apt-get install", 1)[1].split("&&")[0]
            runtime_packages = [w for w in after.split() if not w.startswith("-")]
        if op == "EXPOSE":
            exposed = {int(p.split("/")[0]) for p in rest.split()}
            want = set(binaries["hapi-server"].ports([]).values()) | set(binaries["hapi-optimizer"].ports([]).values())
            if exposed != want:
                error(f"Dockerfile: EXPOSE {sorted(exposed)}, the servers' default ports are {sorted(want)}")
        if op == "HEALTHCHECK":
            cmd = rest.split("CMD", 1)[1].strip()
            argv = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
            port = check_client_command("Dockerfile HEALTHCHECK", argv, client) if argv[0] == "hapi-client" else None
            if argv[0] != "hapi-client" or "health" not in argv:
                error("Dockerfile HEALTHCHECK: expected `hapi-client --target=... health` (grpc.health.v1)")
            if port != binaries["hapi-server"].ports([]).get("grpc"):
                error(f"Dockerfile HEALTHCHECK: port {port} is not hapi-server's default gRPC port")
        if op == "CMD":
            argv = json.loads(rest)
            if argv[0] in binaries:
                binaries[argv[0]].check_args("Dockerfile CMD", argv[1:])
        if op == "USER" and rest.split(":")[0] in ("root", "0"):
            error("Dockerfile: runs as root")
    for needed in ("scripts/install-deps.sh", "scripts/build.sh", "CMakeLists.txt", "proto", "core", "model",
                   "server", "optimizer", "client", "deploy/docker/hapi-bootstrap.sh", "repository/models"):
        if ignored(needed, patterns):
            error(f".dockerignore excludes {needed}, which the image build needs")
    for excluded in ("build", ".git"):
        if not ignored(excluded, patterns):
            error(f".dockerignore should exclude {excluded}")
    if not any(op == "USER" for op, _ in ins):
        error("Dockerfile: no USER (runs as root)")
    # The build stage copies what the build reads, not the whole context: every
    # directory CMake enters and every file the build runs must be among its COPYs.
    build_copies, stage = [], 0
    for op, rest in ins:
        if op == "FROM":
            stage += 1
        elif op == "COPY" and stage == 1:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            build_copies += [w.rstrip("/") for w in words[:-1]]
    cmake = open(os.path.join(source, "CMakeLists.txt")).read()
    needs = ["CMakeLists.txt", "scripts/install-deps.sh", "scripts/build.sh", "repository/models"]
    needs += re.findall(r"add_subdirectory\(\s*([\w/.-]+)", cmake)
    if "." not in build_copies:
        for need in needs:
            if not any(need == c or need.startswith(c + "/") for c in build_copies):
                error(f"Dockerfile: the build stage does not COPY {need} (it copies {build_copies})")
    # The checks of these instructions above run only when they are there.
    for needed in ("EXPOSE", "HEALTHCHECK", "CMD"):
        if not any(op == needed for op, _ in ins):
            error(f"Dockerfile: no {needed}")
    ok(f"stages {stages}; builds {main_targets}; COPY sources exist and are not .dockerignored; "
       "EXPOSE, HEALTHCHECK and CMD match the binaries")
    check_runtime_packages(runtime_packages, build_dir, target_files)


def packages_of(paths):
    """Debian package owning each library path (None when none does), in one
    dpkg call. Libraries resolve through /lib or /usr/lib (merged /usr)."""
    candidates = {}
    for lib in paths:
        real = os.path.realpath(lib)
        for c in {lib, real}:
            alts = {c, c[len("/usr"):] if c.startswith("/usr/lib/") else "/usr" + c if c.startswith("/lib/") else c}
            for a in alts:
                candidates.setdefault(a, set()).add(lib)
    p = subprocess.run(["dpkg", "-S"] + sorted(candidates), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       text=True)
    owner = {}
    for line in p.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        for lib in candidates.get(path.strip(), ()):
            owner[lib] = pkg.split(":")[0].split(",")[0].strip()
    return {lib: owner.get(lib) for lib in paths}


def check_runtime_packages(packages, build_dir, target_files):
    print("Dockerfile runtime packages")
    if not packages:
        error("Dockerfile: no `apt-get install` of runtime packages in the runtime stage")
        return
    if not shutil.which("dpkg-query"):
        print("  note: no dpkg here; runtime packages not checked")
        return
    for pkg in packages:
        p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        if "install ok installed" not in p.stdout:
            error(f"Dockerfile: runtime package {pkg} is not a Debian package installed here "
                  "(the build links against the -dev packages, which depend on it)")
    base = {"libc6", "libgcc-s1"}  # in every Debian image
    direct, closure_libs = {}, {}
    for rel in sorted(target_files):
        binary = os.path.join(build_dir, rel)
        needed = re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(
            ["readelf", "-d", binary], stdout=subprocess.PIPE, text=True).stdout)
        ldd = {}
        for line in subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True).stdout.splitlines():
            m = re.match(r"\s*(\S+) => (/\S+)", line)
            if m:
                ldd[m.group(1)] = m.group(2)
            elif "not found" in line:
                error(f"{rel}: ldd: {line.strip()}")
        owners = packages_of(list(ldd.values()))
        for lib in needed:
            if lib in ldd:
                direct[lib] = (owners[ldd[lib]], rel)
        for lib, path in ldd.items():
            closure_libs[lib] = (owners[path], rel)
    for lib, (pkg, rel) in sorted(direct.items()):
        if pkg is None:
            error(f"{rel} needs {lib}, which no Debian package owns")
        elif pkg not in packages and pkg not in base:
            error(f"{rel} needs {lib} from {pkg}, which the runtime stage does not install")
    ok(f"{len(direct)} directly needed libraries, from {sorted({p for p, _ in direct.values()})}")
    # The whole ldd closure must come with the Depends of those packages.
    p = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"] + packages,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    closure = {l.strip() for l in p.stdout.splitlines() if l and not l.startswith(" ")}
    if p.returncode != 0 or len(closure) <= len(packages):
        print("  note: apt lists unavailable; the dependency closure was not checked")
        return
    missing = {(pkg, lib) for lib, (pkg, _) in closure_libs.items()
               if pkg and pkg not in closure and pkg not in base}
    for pkg, lib in sorted(missing):
        error(f"{lib} (package {pkg}) is loaded by the binaries but not pulled in by the runtime packages")
    ok(f"all {len(closure_libs)} loaded libraries come with the runtime packages' Depends "
       f"({len(closure)} packages)")


# --- Kubernetes -----------------------------------------------------------------
def k8s_objects(source):
    kdir = os.path.join(source, "deploy/k8s")
    kust = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml")))
    for r in kust.get("resources", []):
        if not os.path.exists(os.path.join(kdir, r)):
            error(f"kustomization.yaml: resource {r} does not exist")
    for g in kust.get("configMapGenerator", []):
        for f in g.get("files", []):
            if not os.path.isfile(os.path.join(kdir, f.split("=")[-1])):
                error(f"kustomization.yaml: configMapGenerator {g['name']} file {f} does not exist")
    kubectl = shutil.which("kubectl")
    if kubectl:
        p = subprocess.run([kubectl, "kustomize", kdir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        if p.returncode != 0:
            error(f"kubectl kustomize deploy/k8s failed: {p.stdout[-2000:]}")
            return kust, []
        objs = [o for o in yaml.safe_load_all(p.stdout) if o]
        ok(f"kubectl kustomize: {len(objs)} objects")
        return kust, objs
    print("  note: kubectl not installed; checking the resource files without kustomize")
    objs = []
    for r in kust.get("resources", []):
        objs += [o for o in yaml.safe_load_all(open(os.path.join(kdir, r))) if o]
    for g in kust.get("configMapGenerator", []):
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}})
    return kust, objs


def check_k8s(source, binaries, devices, exported):
    print("deploy/k8s")
    kust, objs = k8s_objects(source)
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = set(by_kind.get("ConfigMap", {}))
    claims = by_kind.get("PersistentVolumeClaim", {})
    workloads = list(by_kind.get("Deployment", {}).values()) + list(by_kind.get("Job", {}).values())
    pod_ports = {}  # deployment name -> {port name: number}
    for w in workloads:
        name = w["metadata"]["name"]
        spec = w["spec"]["template"]["spec"]
        where = f"k8s {w['kind']} {name}"
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        sel = w["spec"].get("selector", {}).get("matchLabels", {})
        if any(labels.get(k) != v for k, v in sel.items()):
            error(f"{where}: selector {sel} does not match the pod labels {labels}")
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for v in vols.values():
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
                error(f"{where}: claim {v['persistentVolumeClaim']['claimName']} does not exist")
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                error(f"{where}: config map {v['configMap']['name']} does not exist")
        ports = {}
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            cw = f"{where} container {c['name']}"
            for vm in c.get("volumeMounts", []):
                if vm["name"] not in vols:
                    error(f"{cw}: mounts undefined volume {vm['name']}")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef", {}).get("name")
                if ref and ref not in configmaps:
                    error(f"{cw}: envFrom config map {ref} does not exist")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                error(f"{cw}: needs resource requests and limits")
            argv = (c.get("command") or []) + (c.get("args") or [])
            if argv and argv[0] in binaries:
                b = binaries[argv[0]]
                b.check_args(cw, argv[1:])
                listen = b.ports(argv[1:])
                declared = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                if declared != listen:
                    error(f"{cw}: containerPorts {declared} differ from what it listens on {listen}")
                ports.update(declared)
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    pr = c.get(probe)
                    if not pr:
                        error(f"{cw}: no {probe}")
                    elif pr.get("grpc", {}).get("port") != listen.get("grpc"):
                        error(f"{cw}: {probe} must be a native gRPC probe on port {listen.get('grpc')}, got {pr}")
                if argv[0] == "hapi-server":
                    dev = next((a.split("=", 1)[1] for a in argv if a.startswith("--device=")), None)
                    if dev not in devices:
                        error(f"{cw}: --device={dev} has no profile in the hapi-device-profiles config map")
                    waits = " ".join(" ".join(ic.get("command", [])) for ic in spec.get("initContainers", []))
                    if dev and f'device: "{dev}"' not in waits:
                        error(f"{cw}: the wait-for-variant init container should wait for device {dev}")
                    repo = next((vm for vm in c.get("volumeMounts", []) if vm["mountPath"] == "/var/lib/hapi/repository"), None)
                    if not repo or not repo.get("readOnly"):
                        error(f"{cw}: should mount the repository read-only")
        pod_ports[name] = (labels, ports)
        if name == "hapi-optimizer":
            if w["spec"].get("replicas") != 1 or w["spec"].get("strategy", {}).get("type") != "Recreate":
                error(f"{where}: must have replicas 1 and strategy Recreate")
            claim_names = {v["persistentVolumeClaim"]["claimName"] for v in vols.values() if "persistentVolumeClaim" in v}
            if not claim_names:
                error(f"{where}: needs a PersistentVolumeClaim for the repository and its state")
    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        matches = [d for d, (labels, _) in pod_ports.items() if all(labels.get(k) == v for k, v in sel.items())]
        if not matches:
            error(f"k8s Service {name}: selector {sel} matches no workload")
            continue
        ports = pod_ports[matches[0]][1]
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            if (isinstance(tp, str) and tp not in ports) or (isinstance(tp, int) and tp not in ports.values()):
                error(f"k8s Service {name}: targetPort {tp} is not a container port of {matches[0]} ({ports})")
            if p["port"] != ports.get(p.get("name"), p["port"]):
                error(f"k8s Service {name}: port {p['name']}={p['port']} differs from the container's {ports}")
    srv_svc = by_kind.get("Service", {}).get("hapi-server")
    if not srv_svc or srv_svc["spec"].get("clusterIP") != "None":
        error("k8s: Service hapi-server must be headless (clusterIP: None) for client-side gRPC balancing")
    deployments = by_kind.get("Deployment", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    if not hpas:
        error("k8s: no HorizontalPodAutoscaler")
    adapter = yaml.safe_load(open(os.path.join(source, "deploy/k8s/prometheus-adapter/configmap.yaml")))
    adapter_rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    adapter_metrics = {r["name"]["as"] for r in adapter_rules}
    for r in adapter_rules:
        check_metric_names("prometheus-adapter rule", r["seriesQuery"], exported)
    for name, h in hpas.items():
        ref = h["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in deployments:
            error(f"k8s HPA {name}: scaleTargetRef {ref} does not exist")
        elif "replicas" in deployments[ref["name"]]["spec"]:
            error(f"k8s Deployment {ref['name']}: drop `replicas`, the HPA {name} owns it")
        for m in h["spec"]["metrics"]:
            if m["type"] == "Pods":
                metric = m["pods"]["metric"]["name"]
                check_metric_names(f"k8s HPA {name}", metric, exported)
                if metric not in adapter_metrics:
                    error(f"k8s HPA {name}: metric {metric} is not exposed by the adapter rule ({adapter_metrics})")
            else:
                error(f"k8s HPA {name}: expected a Pods metric, got {m['type']}")
    pm = yaml.safe_load(open(os.path.join(source, "deploy/k8s/monitoring/podmonitor.yaml")))
    sel = pm["spec"]["selector"]["matchLabels"]
    selected = [d for d, (labels, _) in pod_ports.items() if all(labels.get(k) == v for k, v in sel.items())]
    for d in ("hapi-server", "hapi-optimizer"):
        if d not in selected:
            error(f"PodMonitor: selector {sel} does not select {d}")
        elif pm["spec"]["podMetricsEndpoints"][0]["port"] not in pod_ports[d][1]:
            error(f"PodMonitor: port {pm['spec']['podMetricsEndpoints'][0]['port']} is not a port of {d}")
    ok(f"{len(objs)} objects: {', '.join(f'{k} {sorted(v)}' for k, v in sorted(by_kind.items()))}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True)
    ap.add_argument("--build_dir", required=True)
    for b in ("server", "optimizer", "client", "profile", "train"):
        ap.add_argument(f"--{b}", required=True)
    args = ap.parse_args()
    source = os.path.abspath(args.source)
    build_dir = os.path.abspath(args.build_dir)

    print("parsing")
    docs = parse_all(source)
    binaries = {"hapi-server": Binary(args.server, "absl"), "hapi-optimizer": Binary(args.optimizer, "absl")}
    client = Binary(args.client, "cli11")
    target_files = {os.path.relpath(os.path.abspath(getattr(args, b)), build_dir)
                    for b in ("server", "optimizer", "client", "profile", "train")}
    exported = exported_metrics(source)
    devices = profile_names(source)

    compose = docs["docker-compose.yml"][0]
    services, listening, mounts = check_compose(source, compose, binaries, client)
    check_compose_semantics(source, services, listening, mounts, devices)
    prom = docs["deploy/prometheus/prometheus.yml"][0]
    check_prometheus(source, prom, services, listening, mounts, exported)
    check_grafana(source, docs, services, listening, mounts, prom["global"]["scrape_interval"], exported)
    check_dockerfile(source, binaries, client, target_files, build_dir)
    check_k8s(source, binaries, devices, exported)

    print("scripts")
    for script in glob.glob(os.path.join(source, "deploy", "**", "*.sh"), recursive=True):
        rel = os.path.relpath(script, source)
        p = subprocess.run(["bash", "-n", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            error(f"{rel}: bash -n: {p.stdout}")
        if not os.access(script, os.X_OK):
            error(f"{rel}: not executable")
        if shutil.which("shellcheck"):
            p = subprocess.run(["shellcheck", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode != 0:
                error(f"{rel}: shellcheck:\n{p.stdout}")
        ok(rel)

    if errors:
        print(f"\n{len(errors)} problem(s):")
        for e in errors:
            print(f"  - {e}")
        return 1
    print("\nall deployment files consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
