#!/usr/bin/env python3
"""End-to-end: real hapi-optimizer, hapi-server and hapi-client on loopback.

Trains a tiny model into a temporary repository, profiles it, registers the
device with the optimizer, builds a variant, serves it and classifies test
images through the client; checks the answers and the exit statistics, and
that bad CLI input fails with one clear line and a non-zero exit code.
Usage: e2e_test.py BUILD_DIR
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

BUILD = os.path.abspath(sys.argv.pop(1)) if len(sys.argv) > 1 else "build"
TRAIN = f"{BUILD}/model/hapi-train"
PROFILE = f"{BUILD}/model/hapi-profile"
OPTIMIZER = f"{BUILD}/optimizer/hapi-optimizer"
SERVER = f"{BUILD}/server/hapi-server"
CLIENT = f"{BUILD}/client/hapi-client"
EVALUATE = f"{BUILD}/bench/hapi-evaluate"
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, check=True, timeout=120):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def wait_until(fn, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up")


class EndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hapi-e2e-")
        cls.repo = os.path.join(cls.tmp, "repository")
        cls.procs = []
        run(TRAIN, f"--repository={cls.repo}", "--model=tiny", "--epochs=1", "--exit_epochs=1",
            "--train_limit=3000", "--stem=8", "--widths=8,16,16", "--blocks=2,2,1", "--threads=1",
            "--progress=false", timeout=600)
        cls.profile = os.path.join(cls.tmp, "dev.profile.pbtxt")
        run(PROFILE, f"--repository={cls.repo}", "--model=tiny", "--device=dev", "--threads=1",
            "--iterations=50", "--warmup=10", f"--out={cls.profile}")
        cls.opt_port, cls.srv_port, cls.metrics_port = free_port(), free_port(), free_port()
        cls.opt = [f"--target=127.0.0.1:{cls.opt_port}"]
        cls.srv = [f"--target=127.0.0.1:{cls.srv_port}"]
        cls.start(OPTIMIZER, f"--repository={cls.repo}", f"--listen=127.0.0.1:{cls.opt_port}",
                  "--metrics_address=", f"--profiler={PROFILE}")
        wait_until(lambda: run(CLIENT, *cls.opt, "devices", "list", check=False).returncode == 0,
                   "optimizer")

    @classmethod
    def start(cls, *args):
        log = open(os.path.join(cls.tmp, os.path.basename(args[0]) + ".log"), "a")
        p = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT)
        cls.procs.append(p)
        return p

    @classmethod
    def tearDownClass(cls):
        for p in cls.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in cls.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_1_register_optimize_serve_classify(self):
        out = run(CLIENT, *self.opt, "devices", "register", self.profile).stdout
        self.assertIn("registered device dev", out)
        # The optimizer can also measure its own machine (it runs hapi-profile).
        out = run(CLIENT, *self.opt, "devices", "measure", "local", "--model=tiny", "--iterations=20").stdout
        self.assertIn("measured and registered device local", out)
        listed = run(CLIENT, *self.opt, "devices", "list").stdout
        self.assertRegex(listed, r"local\s+model tiny\s+measured")
        self.assertTrue(os.path.exists(f"{self.repo}/devices/local/profile.pbtxt"))
        # The fastest design within 1 point of the full network's accuracy. On
        # this briefly trained model exit 0 alone is that accurate, so every
        # answer of this variant would come from exit 0: it is not the one served.
        run(CLIENT, *self.opt, "variants", "create", "--model=tiny", "--device=dev",
            "--objective=min-latency", "--max-drop=1.0", "--id=e2e-fastest", "--watch")
        fastest = run(CLIENT, *self.opt, "variants", "get", "e2e-fastest").stdout
        self.assertIn("accuracy_confidence: 0.9", fastest)  # the default, recorded
        fast_ms = float(re.search(r"predicted_latency \{[^}]*?mean_ms: ([\d.e-]+)", fastest).group(1))
        full_ms = float(re.search(r"full_network_latency \{[^}]*?mean_ms: ([\d.e-]+)", fastest).group(1))
        self.assertLess(fast_ms, full_ms, fastest)
        # The most accurate design within a budget between the fastest design
        # and the full network.
        budget_ms = (fast_ms + full_ms) / 2
        variant_out = run(CLIENT, *self.opt, "variants", "create", "--model=tiny", "--device=dev",
                          f"--latency-ms={budget_ms:.6f}", "--id=e2e-variant", "--watch").stdout
        self.assertIn("variant e2e-variant", variant_out)
        manifest = run(CLIENT, *self.opt, "variants", "get", "e2e-variant").stdout
        enabled = [int(x) for x in re.findall(r"^enabled_exits: (\d+)", manifest, re.M)]
        # Without early exits every answer comes from the final classifier and
        # the exit checks below hold trivially.
        self.assertTrue(enabled, manifest)
        self.assertTrue(os.path.exists(f"{self.repo}/variants/e2e-variant/variant.pbtxt"))
        self.assertTrue(os.path.exists(f"{self.repo}/variants/e2e-variant/pareto.csv"))

        server = self.start(SERVER, f"--repository={self.repo}", "--variant=e2e-variant",
                            f"--listen=127.0.0.1:{self.srv_port}",
                            f"--metrics_address=127.0.0.1:{self.metrics_port}")
        wait_until(lambda: run(CLIENT, *self.srv, "status", check=False).returncode == 0, "server")

        lines = run(CLIENT, *self.srv, "classify", "--idx", "300", "--json").stdout.splitlines()
        answers = [json.loads(l) for l in lines]
        self.assertEqual(len(answers), 300)
        final_exit = 5  # stem + 2 + 2 + 1 blocks = 6 stages; the last exit is the final classifier
        exits = {}
        for a in answers:
            e = a.get("exit", {}).get("exit_index", 0)
            exits[e] = exits.get(e, 0) + 1
            self.assertEqual(a["variant"], "e2e-variant")
            # Only the design's exits answer: an enabled one or the final classifier.
            self.assertIn(e, enabled + [final_exit])
            depth = (enabled + [final_exit]).index(e) + 1
            self.assertEqual(a.get("exits_evaluated", 0), depth)
        # Answers from one exit only would make the shares and counters below
        # trivially right (one share of 1.0, one counter of 300).
        self.assertGreaterEqual(len(exits), 2, exits)
        # The observed exit shares follow the optimizer's predicted ratios
        # (predicted on validation, observed on 300 test images).
        ratios = [float(x) for x in re.findall(r"predicted_exit_ratios: ([\d.e-]+)", manifest)]
        self.assertEqual(len(ratios), final_exit + 1)
        self.assertAlmostEqual(sum(ratios), 1.0, places=6)
        for e in range(final_exit + 1):
            self.assertAlmostEqual(exits.get(e, 0) / 300, ratios[e], delta=0.15, msg=(e, exits, ratios))

        # Exit statistics: the server's counters equal what the client saw.
        status = run(CLIENT, *self.srv, "status").stdout
        counts = [int(x) for x in re.findall(r"exit_counts: (\d+)", status)]
        self.assertEqual(sum(counts), 300)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics").read().decode()
        scraped = {}
        for m in re.finditer(r'hapi_exits_total\{exit="([^"]+)",variant="e2e-variant"\} (\d+)', metrics):
            scraped[m.group(1)] = int(m.group(2))
        self.assertEqual(sum(scraped.values()), 300)
        for e, n in exits.items():
            label = "final" if e == final_exit else str(e)
            self.assertEqual(scraped[label], n, (e, scraped))

        # Accuracy on labelled images is reported and far above chance.
        text = run(CLIENT, *self.srv, "classify", "--idx", "200").stdout
        acc = float(re.search(r"accuracy ([\d.]+)%", text).group(1))
        self.assertGreater(acc, 40.0)

        # PNG files from export-samples classify like the raw test images.
        samples = os.path.join(self.tmp, "samples")
        run(CLIENT, "export-samples", f"--out={samples}", "--count=5")
        png = [json.loads(l) for l in run(CLIENT, *self.srv, "classify", samples, "--json").stdout.splitlines()]
        raw = answers[:5]
        self.assertEqual([p["label"] for p in png], [r.get("label", 0) for r in raw])

        # Progressive: one message per exit evaluated, the last marked final.
        prog = [json.loads(l) for l in
                run(CLIENT, *self.srv, "classify", "--idx", "1", "--progressive", "--json").stdout.splitlines()]
        self.assertTrue(prog[-1].get("final", False))
        self.assertEqual(len(prog), prog[-1].get("exits_evaluated", 0))
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(timeout=15), 0)

    def expect_cli_error(self, args, pattern):
        p = run(CLIENT, *args, check=False)
        self.assertNotEqual(p.returncode, 0, args)
        err = p.stderr.strip()
        self.assertTrue(err, args)
        self.assertRegex(err, pattern)
        return p

    def test_2_bad_cli_input(self):
        self.expect_cli_error([*self.srv, "classify", "/nonexistent.png"], r"nonexistent\.png")
        bad = os.path.join(self.tmp, "bad.png")
        with open(bad, "wb") as f:
            f.write(b"this is not an image")
        dead = [f"--target=127.0.0.1:{free_port()}", "--timeout=2"]
        p = self.expect_cli_error([*dead, "classify", bad], r"UNAVAILABLE|DEADLINE")
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)
        self.expect_cli_error(["no-such-command"], r"no-such-command|not expected|Extras")
        self.expect_cli_error(["classify", "--no-such-flag"], r"no-such-flag|not expected|Extras")
        self.expect_cli_error([*self.opt, "variants", "create", "--model=tiny", "--device=dev", "--latency-ms=-1"],
                              r"latency")
        self.expect_cli_error([*self.opt, "variants", "create", "--model=tiny", "--device=dev", "--latency-ms=nan"],
                              r"nan|latency|INVALID")
        self.expect_cli_error([*self.opt, "variants", "create", "--model=tiny", "--device=nope", "--latency-ms=5"],
                              r"NOT_FOUND.*nope")
        self.expect_cli_error([*self.opt, "variants", "create", "--model=tiny", "--device=../x", "--latency-ms=5"],
                              r"INVALID_ARGUMENT")
        p = self.expect_cli_error([*self.opt, "variants", "create", "--model=tiny", "--device=dev", "--latency-ms=0.000001",
                                   "--watch"], r"FAILED.*fastest achievable")
        self.assertEqual(p.returncode, 3)
        self.expect_cli_error([*self.opt, "variants", "create", "--model=tiny", "--device=dev",
                               "--objective=min-latency", "--max-drop=1", "--confidence=1.2"],
                              r"INVALID_ARGUMENT.*confidence")
        self.expect_cli_error([*self.opt, "devices", "register", "/nonexistent.pbtxt"], r"nonexistent")

    def test_3_evaluation_runs_on_a_tiny_configuration(self):
        out = os.path.join(self.tmp, "evaluation")
        run(EVALUATE, f"--repository={self.repo}", "--model=tiny", f"--out={out}", "--budgets=2",
            "--measure_samples=40", "--light_epochs=1", "--train_limit=300", "--profile_iterations=20",
            f"--plot_script={SOURCE}/bench/plot_evaluation.py", timeout=600)
        for stat in ("mean", "p95"):
            rows = open(os.path.join(out, f"sweep-{stat}.csv")).read().strip().splitlines()
            self.assertEqual(len(rows), 1 + 2 * 8)  # header + budgets x schemes
        hapi_rows = [r for r in open(os.path.join(out, "sweep-mean.csv")) if ",hapi," in r]
        self.assertEqual(len(hapi_rows), 2, "one hapi row per budget")  # else all() holds vacuously
        self.assertTrue(all(r.split(",")[3] for r in hapi_rows), "hapi must meet every budget")
        light = open(os.path.join(out, "lightweight.csv")).read().strip().splitlines()
        self.assertEqual(len(light), 3)
        for fig in ("accuracy-vs-budget-mean.svg", "exit-distribution.svg", "pareto.svg"):
            self.assertGreater(os.path.getsize(os.path.join(out, fig)), 1000, fig)


if __name__ == "__main__":
    unittest.main(verbosity=2)
