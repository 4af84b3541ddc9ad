#!/usr/bin/env python3
"""Monitoring integration test, with real processes on loopback:

  hapi-train (tiny model) -> hapi-profile (analytic) -> Prometheus (the deploy
  config's jobs, scraping every second, deploy/prometheus/alerts.yml with every
  `for:` set to 0s) -> hapi-optimizer -> deploy/docker/hapi-bootstrap.sh (seeds
  the model, registers the device, runs a variant job; run twice, the second
  run must change nothing) -> hapi-server --device=dev serving a variant with a
  0.01 ms mean SLA -> load (hapi-client bench) -> a newer variant with a 0.01 ms
  worst-case SLA is published and hot-swapped in by the server -> load again.
  The server runs its live accuracy monitor (--monitor_fraction) and drift
  detector, with the closed loop in its default mode.

Then checks, through Prometheus's HTTP API:
  * the SLA alerts fire only after the load (HapiSlaLatencyBreached for the mean
    SLA, HapiSlaWorstCaseBreached for the worst-case one), HapiExitRatioDrift
    fires (the variant predicts everything at the final exit, but exit 1 has
    threshold 0), and the availability/error alerts do not;
  * every rule evaluates without error (rule health "ok");
  * every expression of the Grafana dashboard (Grafana variables substituted),
    every template-variable query, every recording rule and every alert
    expression, and each operand of every alert's top-level comparison, is
    valid and returns at least one series with a finite value; the only
    exception is an expression reading a series of CONDITIONAL_SERIES that this
    scenario cannot produce, and only while that series is really absent;
  * the health checks of the Dockerfile and docker-compose.yml pass on the live
    server and optimizer, and fail once the server is stopped, when
    HapiServerDown fires.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_util  # noqa: E402

MODEL = "tiny"
DEVICE = "dev"

# Series the server exports only in situations this scenario does not create.
# An expression reading one of them may return no data, but only when the
# selector it reads (name and label matchers) matched no series during the
# run; every other expression must return data, and every expression must
# be valid. The live monitor's other series (hapi_monitor_*, hapi_drift_*)
# exist from the moment a variant loads with the monitor on, so they are
# required.
CONDITIONAL_SERIES = {
    "hapi_sla_max_disagreement": "exported only for a variant whose SLA bounds accuracy; "
                                 "the test's variants bound latency only",
    "hapi_loop_decisions_total": "a (variant, reason, action) child appears with the closed "
                                 "loop's first such decision; none is certain here (no accuracy "
                                 "bound, loop in alert mode: never 'failed')",
}
SELECTOR_RE = re.compile(r"(?<![\w:])(hapi_[a-z0-9_]+)(\{[^}]*\})?")


class TestFailure(Exception):
    pass


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Processes:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = {}

    def start(self, name, argv, env=None):
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        print(f"[start] {name}: {' '.join(argv)}", flush=True)
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.tmp)
        return self.procs[name]

    def check_alive(self, name):
        p = self.procs[name]
        if p.poll() is not None:
            raise TestFailure(f"{name} exited with code {p.returncode}; see its log below")

    def stop(self, name, timeout=10):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def dump_logs(self):
        for name in self.procs:
            path = os.path.join(self.tmp, f"{name}.log")
            with open(path, errors="replace") as f:
                lines = f.readlines()
            print(f"----- last lines of {name}.log -----")
            sys.stdout.writelines(lines[-40:])


def run(argv, timeout=180, env=None, cwd=None):
    print(f"[run] {' '.join(argv)}", flush=True)
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, env=env, cwd=cwd)
    if p.returncode != 0:
        raise TestFailure(f"{argv[0]} failed with code {p.returncode}:\n{p.stdout[-4000:]}")
    print(f"      ok in {time.monotonic() - t0:.1f}s", flush=True)
    return p.stdout


def wait_for(what, predicate, timeout, interval=0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, urllib.error.URLError, subprocess.SubprocessError, TestFailure) as e:
            last = e
        time.sleep(interval)
    raise TestFailure(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path, **params):
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)

    def query(self, expr):
        """(status, error, result) of an instant query; HTTP 400/422 carry the error."""
        try:
            body = self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        return body.get("status"), body.get("error", ""), body.get("data", {}).get("result", [])

    def ready(self):
        with urllib.request.urlopen(f"{self.base}/-/ready", timeout=5) as r:
            return r.status == 200

    def firing(self, alertname, **labels):
        matchers = ",".join([f'alertname="{alertname}"', 'alertstate="firing"'] +
                            [f'{k}="{v}"' for k, v in labels.items()])
        status, error, result = self.query(f"ALERTS{{{matchers}}}")
        if status != "success":
            raise TestFailure(f"ALERTS query failed: {error}")
        return result


def finite_values(result):
    values = []
    for series in result:
        for v in ([series["value"]] if "value" in series else series.get("values", [])):
            try:
                x = float(v[1])
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                values.append(x)
    return values


def absent_conditional(prom, expr):
    """[(selector, why)] for the selectors of CONDITIONAL_SERIES in `expr`
    that matched no series during the run (the last hour)."""
    absent = []
    for name, matchers in SELECTOR_RE.findall(expr):
        if name not in CONDITIONAL_SERIES:
            continue
        selector = name + matchers
        status, error, result = prom.query(f"count(last_over_time({selector}[1h]))")
        if status != "success":
            raise TestFailure(f"query for {selector} failed: {error}")
        if not result and (selector, CONDITIONAL_SERIES[name]) not in absent:
            absent.append((selector, CONDITIONAL_SERIES[name]))
    return absent


def write_variant(repository, variant_id, statistic, created_at, num_exits):
    """A hand-written variant manifest (hapi.v1.VariantManifest text format),
    published like the optimizer does: staged, then renamed into place. Exit 0
    answers when confident, exit 1 has threshold 0 so it answers everything
    else; the prediction says everything leaves at the final exit, so the
    exit-ratio drift alert must fire."""
    predicted = [0.0] * (num_exits - 1) + [1.0]
    text = "\n".join(
        [f'id: "{variant_id}"', f'model: "{MODEL}"', f'device: "{DEVICE}"',
         f"sla {{ latency_budget_ms: 0.01 statistic: {statistic} objective: MAX_ACCURACY }}",
         'exit_policy: "max_softmax"', "enabled_exits: 0", "enabled_exits: 1",
         "thresholds: 0.3", "thresholds: 0"] +
        [f"predicted_exit_ratios: {r}" for r in predicted] +
        ["predicted_accuracy: 0.5", "predicted_latency { mean_ms: 0.005 }", f'created_at: "{created_at}"', ""])
    staging = os.path.join(repository, "variants", f".tmp-{variant_id}")
    os.makedirs(staging)
    with open(os.path.join(staging, "variant.pbtxt"), "w") as f:
        f.write(text)
    os.rename(staging, os.path.join(repository, "variants", variant_id))


def count_model_exits(repository):
    with open(os.path.join(repository, "models", MODEL, "manifest.pbtxt")) as f:
        return sum(1 for line in f if line.startswith("exits {"))


def healthchecks(source):
    """The hapi-client health checks of the Dockerfile and docker-compose.yml,
    by the service they check: {'server': [argv, ...], 'optimizer': [...]}."""
    checks = {"server": [], "optimizer": []}
    with open(os.path.join(source, "Dockerfile")) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("HEALTHCHECK") and "CMD" in line:
            checks["server"].append(json.loads(line.split("CMD", 1)[1].strip()))
    if not checks["server"]:
        raise TestFailure("Dockerfile: no HEALTHCHECK ... CMD [...] found, so it would go unchecked")
    with open(os.path.join(source, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    for name in checks:
        test = compose["services"][name]["healthcheck"]["test"]
        checks[name].append(test[1:])
    return checks


def run_healthcheck(argv, client, port):
    """Runs a health check's argv with the local client and the test's port."""
    argv = [client] + [f"--target=127.0.0.1:{port}" if a.startswith("--target=") else a for a in argv[1:]]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    return p.returncode, p.stdout


def prometheus_test_config(source, tmp, server_metrics, optimizer_metrics):
    """The deploy config with loopback targets, 1 s scrapes and evaluations,
    and a copy of the deploy rules with every `for:` set to 0s."""
    with open(os.path.join(source, "deploy/prometheus/prometheus.yml")) as f:
        config = yaml.safe_load(f)
    rule_files = config.get("rule_files", [])
    if rule_files != ["alerts.yml"]:
        raise TestFailure(f"deploy/prometheus/prometheus.yml: expected rule_files [alerts.yml], got {rule_files}")
    with open(os.path.join(source, "deploy/prometheus/alerts.yml")) as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    rules_path = os.path.join(tmp, "alerts-for-0s.yml")
    with open(rules_path, "w") as f:
        yaml.safe_dump(rules, f, sort_keys=False)

    targets = {"hapi-server": f"127.0.0.1:{server_metrics}", "hapi-optimizer": f"127.0.0.1:{optimizer_metrics}"}
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name not in targets:
            continue
        test_job = {k: v for k, v in job.items() if not k.endswith("_sd_configs") and k != "static_configs"}
        test_job["static_configs"] = [{"targets": [targets.pop(name)]}]
        test_job["scrape_interval"] = "1s"
        jobs.append(test_job)
    if targets:
        raise TestFailure(f"deploy/prometheus/prometheus.yml has no scrape job(s) {sorted(targets)}")
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [rules_path]
    config["scrape_configs"] = jobs
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="repository root")
    for b in ("server", "client", "optimizer", "profile", "train"):
        ap.add_argument(f"--{b}", required=True, help=f"hapi-{b} binary")
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--load_seconds", type=int, default=12)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    source = os.path.abspath(args.source)
    for b in ("server", "client", "optimizer", "profile", "train"):
        setattr(args, b, os.path.abspath(getattr(args, b)))
    if not os.access(args.prometheus, os.X_OK):
        print(f"monitoring_test: {args.prometheus} not found: install the Debian package `prometheus` "
              "(scripts/install-deps.sh does)", file=sys.stderr)
        return 1

    tmp = tempfile.mkdtemp(prefix="hapi-monitoring-")
    procs = Processes(tmp)
    t_start = time.monotonic()
    ok = False
    try:
        ok = scenario(args, source, tmp, procs)
    except (TestFailure, subprocess.TimeoutExpired) as e:
        print(f"\nFAILED: {e}", flush=True)
    finally:
        procs.stop_all()
        if not ok:
            procs.dump_logs()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(files kept in {tmp})")
    print(f"monitoring_test: {'PASSED' if ok else 'FAILED'} in {time.monotonic() - t_start:.0f}s")
    return 0 if ok else 1


def scenario(args, source, tmp, procs):
    seed = os.path.join(tmp, "seed")            # models the bootstrap seeds from
    repository = os.path.join(tmp, "repository")  # the shared repository volume
    devices = os.path.join(tmp, "devices")      # device profiles (the ConfigMap)
    os.makedirs(devices)
    grpc_server, metrics_server, grpc_optimizer, metrics_optimizer, web_prometheus = free_ports(5)
    prom = Prometheus(web_prometheus)
    client = [args.client, f"--target=127.0.0.1:{grpc_server}", f"--data_dir={args.data_dir}"]

    # Model and device profile.
    run([args.train, f"--repository={seed}", f"--model={MODEL}", "--epochs=1", "--exit_epochs=1",
         "--train_limit=1000", "--widths=8,8,8", "--blocks=1,1,1", "--stem=8", "--progress=false",
         "--threads=1", f"--data_dir={args.data_dir}"], timeout=300)
    run([args.profile, f"--repository={seed}", f"--model={MODEL}", f"--device={DEVICE}",
         "--analytic_gmacs=5", f"--out={devices}/{DEVICE}.pbtxt"])

    # Prometheus and the optimizer.
    config = prometheus_test_config(source, tmp, metrics_server, metrics_optimizer)
    if shutil.which("promtool"):
        run(["promtool", "check", "config", config])
    procs.start("prometheus", [args.prometheus, f"--config.file={config}",
                               f"--storage.tsdb.path={tmp}/prometheus-data",
                               f"--web.listen-address=127.0.0.1:{web_prometheus}", "--log.level=warn"])
    procs.start("optimizer", [args.optimizer, f"--repository={repository}",
                              f"--listen=127.0.0.1:{grpc_optimizer}",
                              f"--metrics_address=127.0.0.1:{metrics_optimizer}",
                              "--threshold_grid=16", "--gnuplot="])
    wait_for("Prometheus ready", prom.ready, 60)
    procs.check_alive("prometheus")

    def target_up(job):
        status, _, result = prom.query(f'up{{job="{job}"}} == 1')
        return status == "success" and result

    wait_for("Prometheus to scrape hapi-optimizer", lambda: target_up("hapi-optimizer"), 60)

    # The bootstrap script, as the compose service / k8s Job runs it.
    env = dict(os.environ, HAPI_REPOSITORY=repository, HAPI_MODEL_SEED=os.path.join(seed, "models"),
               HAPI_OPTIMIZER=f"127.0.0.1:{grpc_optimizer}", HAPI_DEVICE_PROFILES=devices,
               HAPI_MODEL=MODEL, HAPI_CLIENT=args.client, HAPI_WAIT_SECONDS="60",
               HAPI_SLA_ARGS="--objective=min-latency --max-drop=5 --statistic=mean")
    bootstrap = os.path.join(source, "deploy/docker/hapi-bootstrap.sh")
    out = run(["bash", bootstrap], env=env, timeout=240)
    print("      " + out.strip().replace("\n", "\n      "))
    if "seeded model tiny" not in out or "\nvariant " not in "\n" + out:
        raise TestFailure(f"bootstrap did not seed the model and build a variant:\n{out}")
    built = [d for d in os.listdir(os.path.join(repository, "variants")) if not d.startswith(".")]
    if len(built) != 1 or not os.path.isfile(os.path.join(repository, "devices", DEVICE, "profile.pbtxt")):
        raise TestFailure(f"after bootstrap: variants {built}, device profile missing?")
    out = run(["bash", bootstrap], env=env, timeout=120)
    if "already in" not in out or "already has a variant" not in out:
        raise TestFailure(f"second bootstrap run was not a no-op:\n{out}")
    if [d for d in os.listdir(os.path.join(repository, "variants")) if not d.startswith(".")] != built:
        raise TestFailure("second bootstrap run built another variant")

    # A variant newer than the optimizer's, with a budget nobody meets.
    num_exits = count_model_exits(repository)
    write_variant(repository, "sla-mean", "MEAN", "2099-01-01T00:00:00Z", num_exits)
    procs.start("server", [args.server, f"--repository={repository}", f"--device={DEVICE}",
                           "--poll_seconds=1", f"--listen=127.0.0.1:{grpc_server}",
                           f"--metrics_address=127.0.0.1:{metrics_server}", "--max_batch=4",
                           "--max_wait_ms=1", "--intra_op_threads=1", "--monitor_fraction=0.1"])

    def serving(variant):
        procs.check_alive("server")
        p = subprocess.run(client + ["--timeout=3", "status"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=20)
        return p.returncode == 0 and f'variant: "{variant}"' in p.stdout

    wait_for("hapi-server serving sla-mean", lambda: serving("sla-mean"), 120)
    health = healthchecks(source)
    for service, port in (("server", grpc_server), ("optimizer", grpc_optimizer)):
        for argv in health[service]:
            code, out = run_healthcheck(argv, args.client, port)
            if code != 0:
                raise TestFailure(f"health check `{' '.join(argv)}` fails on a healthy {service}: {out}")
    print(f"      {sum(map(len, health.values()))} container health checks pass on the live processes")
    wait_for("Prometheus to scrape hapi-server", lambda: target_up("hapi-server"), 60)
    time.sleep(3)  # a few rule evaluations with the server's series present
    if prom.firing("HapiSlaLatencyBreached"):
        raise TestFailure("HapiSlaLatencyBreached fires before any request was served")

    # Load past the budget.
    run(client + ["bench", f"--duration={args.load_seconds}", "--concurrency=4", "--images=500",
                  "--no_progress", f"--json={tmp}/bench-mean.json"], timeout=args.load_seconds + 120)
    alert = wait_for("HapiSlaLatencyBreached{variant=sla-mean} to fire",
                     lambda: prom.firing("HapiSlaLatencyBreached", variant="sla-mean"), 60)
    _, _, mean = prom.query('variant:hapi_request_duration_seconds:statistic_rate5m{variant="sla-mean",statistic="mean"}')
    print(f"      firing: {alert[0]['metric']}; mean latency "
          f"{float(mean[0]['value'][1]) * 1e3 if mean else float('nan'):.3f} ms > budget 0.01 ms")
    wait_for("HapiExitRatioDrift{variant=sla-mean,exit=final}",
             lambda: prom.firing("HapiExitRatioDrift", variant="sla-mean", exit="final"), 60)

    # The optimizer publishes a newer variant: the server swaps it in by itself.
    write_variant(repository, "sla-worst", "WORST", "2099-01-02T00:00:00Z", num_exits)
    wait_for("hapi-server to swap in sla-worst", lambda: serving("sla-worst"), 60)
    run(client + ["bench", f"--duration={max(4, args.load_seconds // 2)}", "--concurrency=2", "--images=500",
                  "--no_progress", f"--json={tmp}/bench-worst.json"], timeout=args.load_seconds + 120)
    wait_for("HapiSlaWorstCaseBreached{variant=sla-worst} to fire",
             lambda: prom.firing("HapiSlaWorstCaseBreached", variant="sla-worst"), 60)
    # One request at a time: the live monitor skips a sampled request while
    # others wait in the queue, which concurrent load keeps full; with an idle
    # queue its samples are shadowed, so its counters and window move.
    run(client + ["bench", "--duration=3", "--concurrency=1", "--images=500", "--no_progress"],
        timeout=120)
    wait_for("the live monitor to shadow requests",
             lambda: finite_values(prom.query('sum(hapi_monitor_samples_total{variant="sla-worst"}) > 0')[2]), 30)
    time.sleep(2)  # a couple of evaluations after the last request

    failures = []
    for name in ("HapiServerDown", "HapiNoServerUp", "HapiOptimizerDown", "HapiHighErrorRate",
                 "HapiOptimizerJobsFailing", "HapiLiveAccuracyBoundBreached", "HapiLoopRepairFailing"):
        if prom.firing(name):
            failures.append(f"alert {name} fires but should not: {prom.firing(name)}")

    # Rule health: an evaluation error (e.g. many-to-many matching) shows here.
    rules = prom.get("/api/v1/rules")["data"]["groups"]
    n_rules = 0
    for group in rules:
        for rule in group["rules"]:
            n_rules += 1
            if rule.get("health") != "ok":
                failures.append(f"rule {rule.get('name')} health {rule.get('health')}: {rule.get('lastError')}")
    unhealthy = sum(1 for f in failures if f.startswith("rule "))
    print(f"      {n_rules} rules loaded, {n_rules - unhealthy} evaluated without error")
    if n_rules != len(deploy_util.load_rules(os.path.join(source, "deploy/prometheus/alerts.yml"))):
        failures.append(f"Prometheus loaded {n_rules} rules, a different number from alerts.yml")

    # Every expression returns data.
    checks = []
    dashboard = deploy_util.load_json(os.path.join(source, "deploy/grafana/dashboards/hapi-serve.json"))
    variables = {v["name"]: deploy_util.TEMPLATE_ALL for v in deploy_util.template_variables(dashboard)}
    variables["datasource"] = "hapi-prometheus"
    for title, ref, expr, _ in deploy_util.dashboard_queries(dashboard):
        checks.append((f"dashboard '{title}' {ref}", deploy_util.substitute(expr, variables)))
    for group, rule in deploy_util.load_rules(os.path.join(source, "deploy/prometheus/alerts.yml")):
        if "record" in rule:
            checks.append((f"record {rule['record']} ({rule.get('labels', {})})", rule["expr"]))
        else:
            operands = deploy_util.split_top_level(rule["expr"])
            for i, operand in enumerate(operands):
                if not deploy_util.is_number(operand):
                    checks.append((f"alert {rule['alert']} operand {i + 1}/{len(operands)}", operand))
            # The whole expression must be valid; it returns data only while
            # the condition holds, which the firing checks cover.
            status, error, _ = prom.query(rule["expr"])
            if status != "success":
                failures.append(f"alert {rule['alert']}: invalid expression: {error}")
    excused = 0
    for what, expr in checks:
        status, error, result = prom.query(expr)
        finite = finite_values(result)
        line = f"  {len(result):3d} series {len(finite):3d} finite  {what}"
        absent = absent_conditional(prom, expr) if status == "success" and not finite else []
        if absent:
            excused += 1
            line += "  (absent: " + "; ".join(f"{sel}: {why}" for sel, why in absent) + ")"
        print(line)
        if status != "success":
            failures.append(f"{what}: query failed: {error}\n    {expr}")
        elif not finite and not absent:
            failures.append(f"{what}: no data ({len(result)} series, none finite)\n    {expr}")

    # Template variables (label_values(<selector>, <label>)).
    for var in deploy_util.template_variables(dashboard):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        selector, label = q[len("label_values("):-1].rsplit(",", 1)
        selector = deploy_util.substitute(selector.strip(), variables)
        values = prom.get(f"/api/v1/label/{label.strip()}/values", **{"match[]": selector})["data"]
        print(f"  variable ${var['name']}: {values}")
        if not values:
            failures.append(f"template variable ${var['name']} ({q}) has no values")

    # Stopping the server: the down alert fires.
    procs.stop("server")
    wait_for("HapiServerDown to fire after the server stopped", lambda: prom.firing("HapiServerDown"), 30)
    print("      HapiServerDown fires once the server is stopped")
    for argv in health["server"]:
        code, out = run_healthcheck(argv, args.client, grpc_server)
        if code == 0:
            failures.append(f"health check `{' '.join(argv)}` passes with the server stopped")
    print("      the server's health checks fail once it is stopped")

    with open(f"{tmp}/bench-mean.json") as f:
        bench = json.load(f)
    print(f"load: {bench.get('requests')} requests in {bench.get('seconds', 0):.1f}s; "
          f"{len(checks)} expressions checked, {excused} without data for an absent conditional series")
    if failures:
        print("\n".join(["", "FAILURES:"] + failures))
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
