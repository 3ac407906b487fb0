#!/usr/bin/env python3
"""Side by side, in one run: faultline vs Chaos Toolkit on the same local
HTTP server.

- start-up + validate: median wall time of `faultline validate` vs
  `chaos validate` over REPEAT runs, and each one's peak RSS;
- per-probe overhead: the same hypothesis, N HTTP probes against the same
  server. Chaos Toolkit: `chaos run` of an experiment whose steady-state
  hypothesis has N http probes (run before and after a no-op method, so 2N
  probes), wall time minus its validate time, divided by 2N. faultline: one
  http probe sampled every 10 ms during a baseline long enough for N
  samples; the p50 sample latency the report gives is the time one probe
  takes inside faultline.

Usage: ctk_compare.py FAULTLINE_BIN CHAOS_BIN [N ...]
"""
import http.server
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPEAT = 10


class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *a):
        pass


def timed(cmd, env=None):
    """Wall time (s) and peak RSS (KiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    took = time.perf_counter() - t
    # ru_maxrss of children is the max over all children so far: run the
    # smaller one first, or compare each in a fresh process (we do: see main).
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(before, after), p


def peak_rss(cmd, env=None):
    """Peak RSS (KiB) of `cmd`, measured in a fresh python process."""
    code = (
        "import resource,subprocess,sys,json;"
        "subprocess.run(json.loads(sys.argv[1]),stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cmd)], capture_output=True, text=True, env=env)
    return int(out.stdout.strip() or 0)


def main():
    fl, chaos = sys.argv[1], sys.argv[2]
    sizes = [int(n) for n in sys.argv[3:]] or [100, 1000]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    d = tempfile.mkdtemp()
    # chaos writes journal.json into the working directory.
    # Paths given relative to where we started stop working after the
    # chdir; a bare command name is left to PATH.
    fl = os.path.abspath(fl)
    if os.sep in chaos:
        chaos = os.path.abspath(chaos)
    os.chdir(d)
    env = dict(os.environ, FAULTLINE_DB=os.path.join(d, "h.db"))

    fl_yaml = os.path.join(d, "fl.yaml")
    with open(fl_yaml, "w") as f:
        f.write(
            f"name: probes\nhypothesis:\n  probes:\n    - name: web\n      interval: 10ms\n"
            f"      http: {{ url: \"{url}\" }}\n      tolerances:\n        - success_rate: \"99%\"\n"
            f"baseline: 1s\nduration: 100ms\nrecovery: 100ms\nfaults:\n  - kill: {{ name: nothing-here }}\n"
        )
    ctk_json = os.path.join(d, "ctk.json")

    def ctk_exp(n):
        return {
            "version": "1.0.0",
            "title": "probes",
            "description": "n http probes",
            "steady-state-hypothesis": {
                "title": "the server answers",
                "probes": [
                    {"type": "probe", "name": f"p{i}", "tolerance": 200,
                     "provider": {"type": "http", "url": url, "timeout": 1}}
                    for i in range(n)
                ],
            },
            "method": [{"type": "action", "name": "noop",
                        "provider": {"type": "process", "path": "true"}}],
            "rollbacks": [],
        }

    with open(ctk_json, "w") as f:
        json.dump(ctk_exp(1), f)

    fl_validate = [fl, "validate", fl_yaml]
    ctk_validate = [chaos, "--no-log-file", "validate", ctk_json]
    fl_t = statistics.median(timed(fl_validate, env)[0] for _ in range(REPEAT))
    ctk_t = statistics.median(timed(ctk_validate, env)[0] for _ in range(REPEAT))
    fl_rss, ctk_rss = peak_rss(fl_validate, env), peak_rss(ctk_validate, env)
    print(f"start-up + validate (median of {REPEAT}): faultline {fl_t*1000:.1f} ms, chaos {ctk_t*1000:.1f} ms "
          f"({ctk_t/fl_t:.1f}x); peak RSS faultline {fl_rss/1024:.1f} MiB, chaos {ctk_rss/1024:.1f} MiB")

    for n in sizes:
        with open(ctk_json, "w") as f:
            json.dump(ctk_exp(n), f)
        t, _, p = timed([chaos, "--no-log-file", "run", "--no-verify-tls", ctk_json], env)
        vt = statistics.median(timed(ctk_validate, env)[0] for _ in range(3))
        ctk_per = (t - vt) / (2 * n)
        # faultline: a baseline long enough for n samples at 10 ms.
        with open(fl_yaml, "w") as f:
            f.write(
                f"name: probes\nhypothesis:\n  probes:\n    - name: web\n      interval: 10ms\n"
                f"      http: {{ url: \"{url}\" }}\n      tolerances:\n        - success_rate: \"99%\"\n"
                f"baseline: {n * 10}ms\nduration: 100ms\nrecovery: 100ms\nfaults:\n  - kill: {{ name: nothing-here }}\n"
            )
        out = subprocess.run([fl, "run", fl_yaml, "--format", "json", "--no-store", "--quiet"],
                             capture_output=True, text=True, env=env)
        rep = json.loads(out.stdout)
        b = rep["probes"][0]["baseline"]
        print(f"N={n}: chaos run {t:.2f} s for {2*n} probes -> {ctk_per*1000:.2f} ms per probe; "
              f"faultline {b['samples']} baseline samples, p50 {b['p50_ms']:.2f} ms per probe "
              f"({ctk_per*1000/b['p50_ms']:.1f}x); chaos exit {p.returncode}")
    srv.shutdown()


if __name__ == "__main__":
    main()
