"""bench/bench.py -- the driver behind scripts/bench: runs every measurement listed in
bench/README.md in one invocation, interleaved, and writes the report (bench/results.md).

Python standard library only, so it runs with any python3: the peers (bench/peers/*) are
started as separate processes with Debian's /usr/bin/python3 (numpy, torch, sklearn) and are
skipped, and said to be skipped, when that interpreter lacks them.

    bench.py --bench-lib B --bare-mhd B --neurond B --out FILE [--smoke] [--rounds R]
             [--python /usr/bin/python3] [--only-c] [--only-pg]

The PostgreSQL figures (bench_pg.py) run when NEUROND_TEST_PG names a cluster, as scripts/bench
arranges with tests/pg/with_postgres.sh; --only-pg runs them alone.

Exit status: 0 when every measurement ran and every cross-check held; 1 on a harness error
(a runner failed, a non-2xx answer, runners disagreeing on the loss). Speed never fails it.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import bench_pg
import harness
from harness import (HarnessError, Daemon, api, fmt_spread, fmt_time_us, http_req, log, mark, store_workload,
                     summary, timed_train_call, wait_writeback)

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 2    # untimed steps before the timed ones, in every runner (also the loss cross-check)
PROFILE = 2   # libneuron steps with every cblas_dgemm timed
ROOT = os.path.dirname(HERE)


# ------------------------------------------------------------------ workloads

def workloads(smoke):
    """W1..W5 (bench/README.md). Full sizes are the targets' sizes; smoke sizes only keep the shapes' kind."""
    sgd = lambda lr: {"method": "sgd", "learning_rate": lr}
    w = [
        {"name": "W1", "title": "logistic 100k×100", "task": "binary", "rows": 100000, "data_seed": 101,
         "steps": 10, "spec": {"name": "bench-W1", "kind": "logistic", "inputs": 100, "loss": "bce",
                                "reduction": "mean", "init": {"method": "uniform", "scale": 0.01, "seed": 1},
                                "optimizer": sgd(0.5)}},
        {"name": "W2", "title": "softmax 60k×784, 10 classes", "task": "class", "rows": 60000, "data_seed": 102,
         "steps": 5, "spec": {"name": "bench-W2", "kind": "softmax", "inputs": 784, "classes": 10, "loss": "cce",
                                "reduction": "mean", "init": {"method": "uniform", "scale": 0.01, "seed": 2},
                                "optimizer": sgd(0.5)}},
        {"name": "W3", "title": "MLP 784-128(sigmoid)-10(softmax), 10k rows", "task": "class", "rows": 10000,
         "data_seed": 103, "steps": 5,
         "spec": {"name": "bench-W3", "kind": "mlp", "inputs": 784, "hidden": [{"units": 128, "activation": "sigmoid"}],
                  "outputs": 10, "output_activation": "softmax", "loss": "cce", "reduction": "mean",
                  "init": {"method": "xavier", "seed": 3}, "optimizer": sgd(0.5)}},
        {"name": "W4", "title": "3-3-1 sigmoid net, 3 rows", "task": "binary", "rows": 3, "data_seed": 104,
         "steps": 2000,
         "spec": {"name": "bench-W4", "kind": "mlp", "inputs": 3, "hidden": [{"units": 3, "activation": "sigmoid"}],
                  "outputs": 1, "output_activation": "sigmoid", "loss": "bce", "reduction": "mean",
                  "init": {"method": "uniform", "scale": 0.5, "seed": 4}, "optimizer": sgd(0.5)}},
        {"name": "W5", "title": "linear regression 100k×100", "task": "regression", "rows": 100000,
         "data_seed": 105, "steps": 10,
         "spec": {"name": "bench-W5", "kind": "linear", "inputs": 100, "loss": "l2", "reduction": "mean",
                  "init": {"method": "uniform", "scale": 0.01, "seed": 5}, "optimizer": sgd(0.1)}},
    ]
    if smoke:
        for x, rows in zip(w, (1000, 500, 200, 3, 1000)):
            x["rows"] = rows
            x["steps"] = 200 if x["name"] == "W4" else 3
    return w


def minibatch_workloads(smoke):
    """MB-relu, MB-sigmoid: the W3-shaped MLP on 60 000 rows, trained one shuffled mini-batch
    epoch at a time at each of BATCH_SIZES (bench/README.md)."""
    rows = 3000 if smoke else 60000
    return [{"name": "MB-" + act, "title": "MLP 784-128(%s)-10(softmax), %dk rows" % (act, rows // 1000),
             "task": "class", "rows": rows, "data_seed": 106, "steps": 1, "epochs": 1,
             "spec": {"name": "bench-MB-" + act, "kind": "mlp", "inputs": 784,
                      "hidden": [{"units": 128, "activation": act}], "outputs": 10,
                      "output_activation": "softmax", "loss": "cce", "reduction": "mean",
                      "init": {"method": "xavier", "seed": 6}, "optimizer": {"method": "sgd", "learning_rate": 0.05}}}
            for act in ("relu", "sigmoid")]


BATCH_SIZES = (32, 128, 1024)
# OpenBLAS's fallback kernels for x86-64 CPUs it cannot identify (no AVX)
OLD_OPENBLAS_CORES = ("Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Northwood", "Banias")
MB_WARMUP = 20   # untimed mini-batches before the timed epochs, in every runner


# ------------------------------------------------------------------ processes

def run_json(cmd, env=None, timeout=1800):
    """Run a command that prints JSON lines; return them parsed. Failures are harness errors."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout, text=True)
    if p.returncode != 0:
        raise HarnessError("%s exited with %d:\n%s" % (" ".join(cmd[:3]), p.returncode, p.stderr[-3000:]))
    out = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise HarnessError("%s printed bad JSON (%s): %s" % (cmd[0], e, line[:200]))
    if not out:
        raise HarnessError("%s printed no result:\n%s" % (" ".join(cmd[:3]), p.stderr[-2000:]))
    log("  %-60s %.1f s" % (" ".join(os.path.basename(c) if i < 2 else c for i, c in enumerate(cmd[:4])),
                            time.monotonic() - t0))
    return out


# The OpenBLAS kernel libneuron runs (bench_lib ceil's corename), once known: the peers run it too.
PEER_CORETYPE = None


def peer_env(torch=False):
    """A peer's best configuration: OPENBLAS_L2_SIZE unset in that command alone and
    OPENBLAS_CORETYPE the kernel libneuron runs (PEER_CORETYPE; unset before it is known, so
    OpenBLAS picks its own), and for PyTorch a passive OpenMP pool. libneuron replaces OpenBLAS's
    pre-AVX fallback with a fitting kernel (lib/blas.h); with the fallback the peers' OpenBLAS
    would run several times below the CPU."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if PEER_CORETYPE:
        env["OPENBLAS_CORETYPE"] = PEER_CORETYPE
    if torch:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def python_has(python, module):
    if not python or not os.path.exists(python):
        return False
    return subprocess.run([python, "-c", "import " + module], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# ------------------------------------------------------------------ HTTP

def start_neurond(args, workdir, name, extra=()):
    return harness.start_neurond(args.neurond, os.path.join(workdir, name + ".db"), name, workdir, extra)


# ------------------------------------------------------------------ the measurements

def check_losses(results, lib_by_w, errors):
    """Every runner must compute the same loss at θ0 and after the warm-up steps: otherwise the
    timings compare different work. Returns the largest relative difference seen."""
    worst = 0.0
    for r in results:
        ref = lib_by_w.get(r["workload"])
        if ref is None:
            continue
        for key in ("loss0", "lossk"):
            if key not in r or r[key] is None:
                continue
            a, b = r[key], ref[key]
            rel = abs(a - b) / max(abs(b), 1e-300)
            worst = max(worst, rel)
            if rel > 1e-6:
                errors.append("%s %s: %s=%.17g but libneuron has %.17g (rel %.2e)" %
                              (r["workload"], r["runner"], key, a, b, rel))
    return worst


def wrk_rps(port, path, seconds, conns, body=None):
    """wrk -t2 -cN -dS; returns requests/s. Any socket error or non-2xx is a harness error."""
    cmd = ["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "--latency"]
    env = dict(os.environ)
    if body is not None:
        cmd += ["-s", os.path.join(HERE, "wrk_post.lua")]
        env["WRK_BODY"] = body
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       timeout=seconds + 60)
    if p.returncode != 0:
        raise HarnessError("wrk failed: %s" % p.stderr[-1000:])
    m = re.search(r"Requests/sec:\s*([0-9.]+)", p.stdout)
    if not m:
        raise HarnessError("wrk printed no Requests/sec:\n%s" % p.stdout)
    if re.search(r"Non-2xx or 3xx responses", p.stdout):
        raise HarnessError("wrk saw non-2xx answers on %s:\n%s" % (path, p.stdout))
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", p.stdout)
    if se and any(int(x) for x in se.groups()):
        raise HarnessError("wrk saw socket errors on %s:\n%s" % (path, p.stdout))
    p50 = re.search(r"^\s*50%\s+(\S+)", p.stdout, re.M)
    return float(m.group(1)), (p50.group(1) if p50 else "?")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the daemons on the way out
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-lib")
    ap.add_argument("--bare-mhd")
    ap.add_argument("--neurond")
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--only-c", action="store_true", help="no Python peers")
    ap.add_argument("--only-pg", action="store_true",
                    help="only the PostgreSQL figures (needs NEUROND_TEST_PG: scripts/bench --only-pg)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--render", metavar="RESULTS.json", help="only re-render a saved run into --out")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            R = json.load(f)
        if "history" in R:   # JSON turned its integer keys into strings
            R["history"] = {(int(k) if k.isdigit() else k): v for k, v in R["history"].items()}
        with open(args.out, "w") as f:
            f.write(render(R, R.get("errors", []), R.get("notes", [])))
        return 1 if R.get("errors") else 0
    if not (args.bench_lib and args.bare_mhd and args.neurond):
        ap.error("--bench-lib, --bare-mhd and --neurond are required (or --render)")

    smoke = args.smoke
    if smoke:
        harness.SETTLE_S = 0.0
    rounds = args.rounds or (1 if smoke else 3)
    threads = os.cpu_count() or 1
    errors, notes = [], []
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="neurond-bench.")
    daemons = []
    R = {"smoke": smoke, "rounds": rounds, "threads": threads, "settle_s": harness.SETTLE_S}
    try:
        run_all(args, smoke, rounds, threads, workdir, daemons, R, errors, notes)
    except HarnessError as e:
        errors.append(str(e))
    except subprocess.TimeoutExpired as e:
        errors.append("timed out: %s" % e)
    except Exception:   # a bug in the harness itself: still a report, still exit 1
        errors.append(traceback.format_exc())
    finally:
        for d in daemons:
            d.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("work directory kept: %s" % workdir)
    R["seconds"] = time.monotonic() - t_start
    R["loadavg_end"] = loadavg()
    R["errors"], R["notes"] = errors, notes
    raw_path = os.path.splitext(args.out)[0] + ".json"
    with open(raw_path, "w") as f:   # every sample, so the report can be checked or re-rendered
        json.dump(R, f, separators=(",", ":"))
    report = render(R, errors, notes)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(report)
    log("report written to %s (%.0f s)" % (args.out, R["seconds"]))
    if errors:
        for e in errors:
            log("HARNESS ERROR: " + e)
        return 1
    return 0


def run_all(args, smoke, rounds, threads, workdir, daemons, R, errors, notes):
    py = args.python
    have_numpy = not args.only_c and python_has(py, "numpy")
    have_torch = have_numpy and python_has(py, "torch")
    have_sklearn = have_numpy and python_has(py, "sklearn")
    have_wrk = shutil.which("wrk") is not None
    R["peers"] = {"numpy": have_numpy, "torch": have_torch, "sklearn": have_sklearn, "wrk": have_wrk}
    for name, ok in (("numpy", have_numpy), ("torch", have_torch), ("sklearn", have_sklearn)):
        if not ok:
            notes.append("%s peer not run: %s" % (name, "--only-c given" if args.only_c else
                                                  "%s cannot import it" % py))
    if not have_wrk:
        notes.append("wrk not installed: requests/s figures not measured")
    R["env"] = machine_info(args, py if have_numpy else None)

    # -------------------------------------------------- data shared by every runner
    W = workloads(smoke)
    MB = minibatch_workloads(smoke)
    if args.only_pg:
        W, MB = [w for w in W if w["name"] in bench_pg.TRAIN_WORKLOADS], []
    R["workloads"] = W
    R["mb_workloads"] = MB
    log("generating data in %s" % workdir)
    for w in W + MB:
        path = os.path.join(workdir, w["name"] + ".json")
        w["path"] = path
        with open(path, "w") as f:
            json.dump({k: w[k] for k in ("name", "task", "rows", "data_seed", "steps", "spec")}, f)
        w["gen"] = run_json([args.bench_lib, "gen", path, workdir])[0]

    if args.only_pg:
        R["only_pg"] = True
        return run_pg_only(args, smoke, rounds, threads, workdir, daemons, W, R, notes)

    # -------------------------------------------------- ceilings (again at the end)
    # The one-pass floor reads an array the size of W1's and W5's X (the same 100 000 × 100).
    x_bytes = max(w["gen"]["x_bytes"] for w in W if w["name"] in ("W1", "W5"))
    ceil_cmd = [args.bench_lib, "ceil", "--threads", str(threads), "--x-bytes", str(x_bytes)] + \
        (["--smoke"] if smoke else [])
    ceils = [run_json(ceil_cmd)[0]]
    global PEER_CORETYPE
    PEER_CORETYPE = ceils[0].get("corename")
    R["env"]["peer_coretype"] = PEER_CORETYPE

    # -------------------------------------------------- the daemon, data stored as batches
    d = start_neurond(args, workdir, "neurond-train")
    daemons.append(d)
    for w in W + MB:
        w["model_id"], w["http_ingest_s"] = store_workload(d.port, w, workdir)
    log("daemon on port %d holds the workloads' data; settled in %.1f s" % (d.port, d.settle()))

    # -------------------------------------------------- per-step timings, interleaved
    runners = ["lib"] + (["numpy"] if have_numpy else []) + (["torch"] if have_torch else []) + ["http"]
    res = {w["name"]: {r: [] for r in runners} for w in W}
    products = {w["name"]: [] for w in W if w["name"] in PRODUCT_FLOORS}
    for rnd in range(rounds):
        order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]   # rotate each round
        log("round %d/%d: %s" % (rnd + 1, rounds, " → ".join(order)))
        if smoke:   # one process per peer for all workloads: torch alone takes seconds to import
            for r in order:
                if r in ("numpy", "torch"):
                    for x in run_json(peer_cmd(r, args, workdir, W, threads), env=peer_env(torch=r == "torch")):
                        res[x["workload"]][r].append(x)
                else:
                    for w in W:
                        res[w["name"]][r].append(run_one(r, w, args, workdir, threads, d))
        else:       # per workload, every runner back to back: the same machine state for all
            for w in W:
                for r in order:
                    res[w["name"]][r].append(run_one(r, w, args, workdir, threads, d))
                if w["name"] in products:   # the BLAS alone on the step's products, same moment
                    products[w["name"]].append(run_products(w, args, threads))
        if smoke:
            for w in W:
                if w["name"] in products:
                    products[w["name"]].append(run_products(w, args, threads))
        for w in W:
            for r in runners:
                if len(res[w["name"]][r]) != rnd + 1:
                    raise HarnessError("%s: runner %s gave %d results after round %d" %
                                       (w["name"], r, len(res[w["name"]][r]), rnd + 1))
    R["res"] = res
    R["runners"] = runners
    R["products"] = products

    # -------------------------------------------------- mini-batch epochs, interleaved
    mb_runners = ["lib"] + (["torch"] if have_torch else []) + ["http"]
    R["mb_runners"] = mb_runners
    R["mb"] = mb = {w["name"]: {str(b): {r: [] for r in mb_runners} for b in BATCH_SIZES} for w in MB}
    R["mb_floor"] = mb_floor = {w["name"]: {str(b): [] for b in BATCH_SIZES} for w in MB}
    for rnd in range(rounds):
        order = mb_runners[rnd % len(mb_runners):] + mb_runners[:rnd % len(mb_runners)]
        log("mini-batch round %d/%d: %s" % (rnd + 1, rounds, " → ".join(order)))
        for w in MB:
            for b in BATCH_SIZES:
                for r in order:
                    mb[w["name"]][str(b)][r].append(run_epochs(r, w, b, args, workdir, threads, d))
                # the BLAS alone on the epoch's products, at the same moment
                mb_floor[w["name"]][str(b)].append(run_json(
                    [args.bench_lib, "products", w["path"], "--threads", str(threads), "--batch-size", str(b),
                     "--reps", "1" if smoke else "3"])[0])
    lib_first = {w["name"]: res[w["name"]]["lib"][0] for w in W}
    peers = [x for w in W for r in ("numpy", "torch") for x in res[w["name"]].get(r, [])]
    R["loss_check_rel"] = check_losses(peers, lib_first, errors)
    for w in W:   # the daemon's first train call started from θ0 too
        h = res[w["name"]]["http"][0]
        ref = lib_first[w["name"]]["loss0"]
        rel = abs(h["loss_before"] - ref) / max(abs(ref), 1e-300)
        R["loss_check_rel"] = max(R["loss_check_rel"], rel)
        if rel > 1e-6:
            errors.append("%s http: loss_before %.17g but libneuron's loss at θ0 is %.17g" %
                          (w["name"], h["loss_before"], ref))

    # -------------------------------------------------- W1, W3 train calls: PostgreSQL vs SQLite
    pg_train_part(args, W, d, lib_first, workdir, daemons, rounds, smoke, threads, R, notes)

    # -------------------------------------------------- lbfgs on W1 vs scikit-learn
    w1 = W[0]
    R["lbfgs"] = {}
    target = None
    if have_sklearn:
        sk = run_json([py, os.path.join(HERE, "peers", "sklearn_peer.py"), workdir, w1["path"],
                       "--reps", "1" if smoke else "3"], env=peer_env())[0]
        R["lbfgs"]["sklearn"] = sk
        target = sk["l_star"] + 1e-4
    lb_cmd = [args.bench_lib, "lbfgs", w1["path"], workdir, "--threads", str(threads),
              "--reps", "1" if smoke else "3", "--max-steps", "50" if smoke else "1000"]
    if target is not None:
        lb_cmd += ["--target", repr(target)]
    R["lbfgs"]["lib"] = run_json(lb_cmd)[0]

    # -------------------------------------------------- micro HTTP: healthz, predict
    R["micro"] = None
    if have_wrk:
        secs, conns = (1, 8) if smoke else (5, 64)
        bare = Daemon([args.bare_mhd, "--port", "0", "--threads", str(threads)], "bare_mhd", workdir)
        daemons.append(bare)
        tiny = next(w for w in W if w["name"] == "W4")
        body = json.dumps({"x": [[0.1, -0.2, 0.3]]})
        st, ans, _ = http_req(d.port, "POST", "/v1/models/%d/predict" % tiny["model_id"], body.encode())
        if st != 200:
            raise HarnessError("predict on the tiny model answered %d: %s" % (st, ans))
        micro = {"healthz": {"bare": [], "neurond": []}, "predict": {"bare": [], "neurond": []},
                 "seconds": secs, "conns": conns, "p50": {}}
        for rnd in range(rounds):
            log("wrk round %d/%d" % (rnd + 1, rounds))
            pairs = [("bare", bare.port, "/healthz"), ("neurond", d.port, "/healthz")]
            if rnd % 2:
                pairs.reverse()
            for who, port, path in pairs:
                rps, p50 = wrk_rps(port, path, secs, conns)
                micro["healthz"][who].append(rps)
                micro["p50"]["healthz-" + who] = p50
            pairs = [("bare", bare.port, "/v1/models/%d/predict" % tiny["model_id"]),
                     ("neurond", d.port, "/v1/models/%d/predict" % tiny["model_id"])]
            if rnd % 2:
                pairs.reverse()
            for who, port, path in pairs:
                rps, p50 = wrk_rps(port, path, secs, conns, body)
                micro["predict"][who].append(rps)
                micro["p50"]["predict-" + who] = p50
        R["micro"] = micro
        bare.stop()
        daemons.remove(bare)

    # -------------------------------------------------- history cost on the tiny net
    tiny = next(w for w in W if w["name"] == "W4")
    hspec = dict(tiny["spec"], name="bench-history")
    hm, _ = api(d.port, "POST", "/v1/models", hspec)
    with open(os.path.join(workdir, "W4.data"), "rb") as f:
        raw = f.read()
    api(d.port, "POST", "/v1/models/%d/batches?rows=%d&cols=%d" % (hm["id"], tiny["rows"], 4), raw,
        "application/octet-stream")
    hsteps = 500 if smoke else 10000
    hist = {1: [], 0: [], "steps": hsteps}
    for rnd in range(rounds):
        for every in ((1, 0) if rnd % 2 == 0 else (0, 1)):
            ans, secs = api(d.port, "POST", "/v1/models/%d/train" % hm["id"],
                            {"steps": hsteps, "history_every": every})
            if ans["steps_run"] != hsteps:
                raise HarnessError("history train ran %s steps (%s)" % (ans["steps_run"], ans["stopped"]))
            hist[every].append({"wall_ms": secs * 1e3, "elapsed_ms": ans["elapsed_ms"]})
    R["history"] = hist
    if not d.alive():
        raise HarnessError("neurond died during the run (log: %s)" % d.log.name)
    d.stop()
    daemons.remove(d)

    # -------------------------------------------------- short jobs/s: one replica vs three on PostgreSQL
    pg_jobs_part(args, workdir, daemons, rounds, smoke, R)

    # -------------------------------------------------- ingest throughput and peak RSS
    sizes = {"csv": 2e6, "json": 2e6, "raw": 2e6} if smoke else {"csv": 200e6, "json": 100e6, "raw": 200e6}
    bodies = {}
    for fmt, size in sizes.items():
        path = os.path.join(workdir, "body." + fmt)
        info = run_json([args.bench_lib, "body", "--format", fmt, "--bytes", repr(size), "--out", path])[0]
        bodies[fmt] = (path, info)
    ingest = {fmt: [] for fmt in sizes}
    disk = []
    for rnd in range(rounds):
        disk.append(disk_write_mbs(workdir, (8 << 20) if smoke else (256 << 20)))
        for fmt in (list(sizes) if rnd % 2 == 0 else list(reversed(list(sizes)))):
            path, info = bodies[fmt]
            with open(path, "rb") as f:
                body = f.read()
            wait_writeback()
            dd = start_neurond(args, workdir, "neurond-ingest-%s-%d" % (fmt, rnd),
                               ["--max-body", str(512 << 20), "--log-level", "warn"])
            daemons.append(dd)
            api(dd.port, "GET", "/healthz")
            m, _ = api(dd.port, "POST", "/v1/models", {"kind": "logistic", "inputs": 100})
            rss0 = dd.status("VmRSS")
            if fmt == "csv":
                q, ct = "?header=false", "text/csv"
            elif fmt == "json":
                q, ct = "", "application/json"
            else:
                q, ct = "?rows=%d&cols=101" % info["rows"], "application/octet-stream"
            ans, secs = api(dd.port, "POST", "/v1/models/%d/batches%s" % (m["id"], q), body, ct)
            if ans["rows"] != info["rows"]:
                raise HarnessError("%s ingest stored %d rows, body has %d" % (fmt, ans["rows"], info["rows"]))
            hwm = dd.status("VmHWM")
            ingest[fmt].append({"seconds": secs, "bytes": info["bytes"], "rows": info["rows"],
                                "float64_bytes": info["float64_bytes"], "rss0_kb": rss0, "hwm_kb": hwm})
            dd.stop()
            daemons.remove(dd)
            del body
    R["ingest"] = ingest
    R["disk_write_mbs"] = disk

    ceils.append(run_json(ceil_cmd)[0])
    R["ceils"] = ceils


def run_pg_only(args, smoke, rounds, threads, workdir, daemons, W, R, notes):
    """--only-pg: the PostgreSQL figures alone, against a SQLite daemon holding W1 and W3 (the
    library runs each once, for the loss at θ0 the PostgreSQL daemon's first call must see)."""
    if not bench_pg.admin_address():
        raise HarnessError("--only-pg needs a PostgreSQL cluster (NEUROND_TEST_PG): run scripts/bench --only-pg")
    d = start_neurond(args, workdir, "neurond-train")
    daemons.append(d)
    for w in W:
        w["model_id"], w["http_ingest_s"] = store_workload(d.port, w, workdir)
    log("daemon on port %d holds %s; settled in %.1f s" % (d.port, ", ".join(w["name"] for w in W), d.settle()))
    lib_first = {w["name"]: run_one("lib", w, args, workdir, threads, d) for w in W}
    pg_train_part(args, W, d, lib_first, workdir, daemons, rounds, smoke, threads, R, notes)
    d.stop()
    daemons.remove(d)
    pg_jobs_part(args, workdir, daemons, rounds, smoke, R)


def pg_train_part(args, W, d, lib_first, workdir, daemons, rounds, smoke, threads, R, notes):
    """W1, W3 train calls on PostgreSQL against the SQLite daemon d (bench_pg.run_train), when
    scripts/bench started a PostgreSQL cluster for the run; else a note that it did not."""
    R["pg"] = {"cores": threads}
    admin = bench_pg.admin_address()
    if not admin:
        R["pg"]["skipped"] = ("no PostgreSQL cluster (NEUROND_TEST_PG unset): scripts/bench makes one with "
                              "tests/pg/with_postgres.sh when the PostgreSQL server (Debian package postgresql) "
                              "is installed")
        notes.append("PostgreSQL figures not measured: " + R["pg"]["skipped"])
        return
    R["pg"]["settings"] = bench_pg.server_settings(admin)
    R["pg"]["train"] = bench_pg.run_train(args.neurond, W, d, {n: x["loss0"] for n, x in lib_first.items()},
                                          workdir, daemons, rounds, smoke, WARMUP)


def pg_jobs_part(args, workdir, daemons, rounds, smoke, R):
    """Short async jobs per second on one replica and on three (bench_pg.run_jobs), after
    pg_train_part, which says when there is no cluster."""
    if bench_pg.admin_address():
        R["pg"]["jobs"] = bench_pg.run_jobs(args.neurond, workdir, daemons, rounds, smoke)


def peer_cmd(runner, args, workdir, ws, threads):
    script = os.path.join(HERE, "peers", runner + "_peer.py")
    return [args.python, script, workdir] + [w["path"] for w in ws] + ["--warmup", str(WARMUP), "--threads", str(threads),
                                                                      "--settle-ms", settle_ms()]


def settle_ms():
    return str(int(harness.SETTLE_S * 1000))


def run_one(runner, w, args, workdir, threads, d):
    steps, warmup = w["steps"], WARMUP
    if runner == "lib":
        return run_json([args.bench_lib, "run", w["path"], workdir, "--steps", str(steps), "--warmup", str(warmup),
                         "--threads", str(threads), "--profile", str(PROFILE), "--settle-ms", settle_ms()])[0]
    if runner in ("numpy", "torch"):
        return run_json(peer_cmd(runner, args, workdir, [w], threads), env=peer_env(torch=runner == "torch"))[0]
    return timed_train_call(d.port, w["model_id"], w, warmup)

PRODUCT_FLOORS = ("W2", "W3")


def run_products(w, args, threads):
    return run_json([args.bench_lib, "products", w["path"], "--threads", str(threads)])[0]


def run_epochs(runner, w, batch, args, workdir, threads, d):
    """w["epochs"] timed epochs at one batch size: {"epoch_ms": [...]} from every runner."""
    epochs = w["epochs"]
    if runner == "lib":
        return run_json([args.bench_lib, "epoch", w["path"], workdir, "--batch-size", str(batch),
                         "--epochs", str(epochs), "--warmup", str(MB_WARMUP), "--threads", str(threads),
                         "--settle-ms", settle_ms()])[0]
    if runner == "torch":
        return run_json([args.python, os.path.join(HERE, "peers", "torch_peer.py"), workdir, w["path"],
                         "--batch-size", str(batch), "--epochs", str(epochs), "--warmup", str(MB_WARMUP),
                         "--threads", str(threads), "--settle-ms", settle_ms()], env=peer_env(torch=True))[0]
    # http: a warm-up call of MB_WARMUP mini-batches (rows into the data cache, training state
    # built), then one call per epoch, as a client training epoch by epoch would make them.
    url = "/v1/models/%d/train" % w["model_id"]
    warmup = {"steps": MB_WARMUP, "batch_size": batch, "history_every": 0}
    api(d.port, "POST", url, warmup)
    harness.settle(lambda: api(d.port, "POST", url, warmup))
    out = {"runner": "http", "workload": w["name"], "batch_size": batch, "epoch_ms": [], "elapsed_ms": []}
    for e in range(epochs):
        ans, secs = api(d.port, "POST", url, {"epochs": 1, "batch_size": batch, "seed": e + 1})
        want = -(-w["rows"] // batch)
        if ans["steps_run"] != want:
            raise HarnessError("%s http epoch at batch %d ran %s of %d steps (%s)" %
                               (w["name"], batch, ans["steps_run"], want, ans["stopped"]))
        out["epoch_ms"].append(secs * 1e3)
        out["elapsed_ms"].append(ans["elapsed_ms"])
    log("  %-5s epoch %-10s batch %-5d %s ms" % (runner, w["name"], batch,
                                                 ", ".join("%.0f" % x for x in out["epoch_ms"])))
    return out


def disk_write_mbs(workdir, size):
    """Durable write rate of the file system holding the databases: `size` bytes written in
    1 MiB pieces to a new file, then one fdatasync (what a commit of that much costs SQLite in
    WAL mode with synchronous=FULL, before its checkpoint writes the pages again)."""
    path = os.path.join(workdir, "disk-probe")
    chunk = os.urandom(1 << 20)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size >> 20):
            os.write(fd, chunk)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    secs = time.perf_counter() - t0
    os.unlink(path)
    return size / 1e6 / secs


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_info(args, py):
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "loadavg_start": loadavg(), "kernel": platform.release(), "cores": os.cpu_count(),
            "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                             "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
        info["cpu"] = m.group(1) if m else "?"
        fl = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
        info["cpu_simd"] = [x for x in ("avx2", "avx512f") if fl and x in fl.group(1).split()]
    except OSError:
        info["cpu"] = "?"
    try:
        info["git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True).stdout.strip()
    except OSError:
        info["git"] = "?"
    if py:
        v = subprocess.run([py, "-c", "import sys,numpy;print(sys.version.split()[0],numpy.__version__)"],
                           stdout=subprocess.PIPE, text=True, env=peer_env())
        info["python"] = py + " " + v.stdout.strip()
    return info


# ------------------------------------------------------------------ the report

def render(R, errors, notes):
    L = []
    smoke = R.get("smoke")
    L.append("# neurond benchmark results")
    L.append("")
    if smoke:
        L.append("**Smoke run** (tiny sizes, one round): checks that the harness works; the figures mean nothing.")
        L.append("")
    L.append("Written by `scripts/bench%s%s` — every number below comes from that one run; nothing is "
             "edited by hand. How to read it: [README.md](README.md)." % (" --smoke" if smoke else "",
                                                                         " --only-pg" if R.get("only_pg") else ""))
    L.append("")
    env = R.get("env", {})
    L.append("- date: %s · host: %s · kernel %s · %s cores · CPU: %s · git: %s" %
             (env.get("date"), env.get("host"), env.get("kernel"), env.get("cores"), env.get("cpu"), env.get("git")))
    L.append("- rounds: %s (interleaved, runner order rotated each round) · threads: %s (OpenBLAS in libneuron and "
             "neurond, torch.set_num_threads) · harness time: %.0f s" % (R.get("rounds"), R.get("threads"),
                                                                          R.get("seconds", 0)))
    L.append("- load average (1, 5, 15 min) at the start: %s · at the end: %s — other work on the machine "
             "inflates every figure, the runners' alike (they are interleaved)" %
             (env.get("loadavg_start"), R.get("loadavg_end")))
    try:
        busy = max(float(str(x).split()[0]) for x in (env.get("loadavg_start"), R.get("loadavg_end"))) > (env.get("cores") or 1)
    except (ValueError, IndexError):
        busy = False
    if busy:
        L.append("- **⚠ the machine was busy** (1-minute load average above its %s cores): absolute times and "
                 "fractions of the ceilings are pessimistic and noisy; the ratios between interleaved runners "
                 "are the trustworthy figures. Re-run on an idle machine for figures to quote." % env.get("cores"))
    ceils0 = (R.get("ceils") or [{}])[0]
    if ceils0.get("corename") in OLD_OPENBLAS_CORES and env.get("cpu_simd"):
        L.append("- **⚠ OpenBLAS runs its %s kernel** on a CPU with %s: this OpenBLAS does not know the CPU model and "
                 "falls back to a pre-AVX kernel, so every `cblas_dgemm` here (libneuron's, numpy's, the floors') runs "
                 "several times below what the CPU can do. The ratios compare like with like; the absolute times do "
                 "not describe the hardware. `OPENBLAS_CORETYPE=Haswell` (or `SkylakeX`) in the environment selects a "
                 "fitting kernel (docs/operations.md)." % (ceils0["corename"], ", ".join(env["cpu_simd"]).upper()))
    oe = env.get("openblas_env", {})
    L.append("- environment: " + ", ".join("%s=%s" % (k, v if v is not None else "(unset)") for k, v in oe.items()) +
             " — libneuron and neurond run with it as is (and pick a fitting OpenBLAS kernel when OpenBLAS falls "
             "back to a pre-AVX one, lib/blas.h); the Python peers run with OPENBLAS_L2_SIZE unset and "
             "OPENBLAS_CORETYPE=%s, the kernel libneuron runs" % env.get("peer_coretype", "(unset)"))
    if env.get("python"):
        L.append("- peers: %s" % env["python"])
    for n in notes:
        L.append("- note: %s" % n)
    if errors:
        L.append("")
        L.append("## Harness errors")
        L.append("")
        L.append("The run is incomplete; these are bugs in the harness or failures of a runner, not speed:")
        L.append("")
        for e in errors:
            L.append("- `%s`" % e.replace("\n", " ")[:600])
    L.append("")

    ceils = R.get("ceils") or []
    targets = []
    if ceils:
        g1 = max(c["dgemm_gflops_1"] for c in ceils)
        gt_t = max(c["dgemm_gflops_t"] for c in ceils)
        # The ceiling used below is the best dgemm rate seen at any thread count: on an idle
        # machine that is the all-cores figure; on a loaded one the 1-thread run can beat it,
        # and a ceiling measured low would flatter the engine.
        gt = max(g1, gt_t)
        bw = max(c["triad_gbs"] for c in ceils)
        rbw = max(c.get("read_gbs", float("nan")) for c in ceils)
        xbw = max((c.get("read_x_gbs") or float("nan")) for c in ceils)
        x_mb = ceils[0].get("read_x_bytes", 0) / 1e6
        L.append("## Ceilings (measured in this run, best of the start and the end)")
        L.append("")
        L.append("| | figure |")
        L.append("|---|---|")
        L.append("| dgemm %d×%d, 1 thread | %.1f GFLOP/s |" % (ceils[0]["dgemm_n"], ceils[0]["dgemm_n"], g1))
        L.append("| dgemm %d×%d, %d threads | %.1f GFLOP/s |" % (ceils[0]["dgemm_n"], ceils[0]["dgemm_n"],
                                                           ceils[0]["threads"], gt_t))
        L.append("| **dgemm ceiling used below** (best of all dgemm runs) | %.1f GFLOP/s |" % gt)
        L.append("| triad a=b+s·c, 3 × %d MiB, %d threads | %.1f GB/s |" % (ceils[0]["triad_mib_per_array"],
                                                                        ceils[0]["threads"], bw))
        L.append("| read Σ b[i] + c[i], 2 × %d MiB, %d threads (nothing written; arrays larger than the "
                 "last-level cache) | %.1f GB/s |" % (ceils[0]["triad_mib_per_array"], ceils[0]["threads"], rbw))
        L.append("| **read of X**: one %.0f MB array, as large as W1's and W5's X, summed again and again by "
                 "the %d compute threads (the W1, W5 floor) | %.1f GB/s |" % (x_mb, ceils[0]["threads"], xbw))
        L.append("| OpenBLAS | %s (core: %s) |" % (ceils[0]["config"], ceils[0]["corename"]))
        L.append("")
        L.append("Per-run values: " + "; ".join("dgemm %.1f/%.1f GFLOP/s, triad %.1f GB/s, read %.1f GB/s, "
                                              "read of X %.1f GB/s" %
                                              (c["dgemm_gflops_1"], c["dgemm_gflops_t"], c["triad_gbs"],
                                               c.get("read_gbs", float("nan")),
                                               c.get("read_x_gbs") or float("nan")) for c in ceils))
        L.append("")
    else:
        gt = bw = rbw = xbw = float("nan")

    res = R.get("res")
    W = R.get("workloads") or []
    step = {}
    if res:
        L.append("## Per-step time, full-batch gradient step")
        L.append("")
        L.append("Median (p10–p90) over all timed steps of all rounds. *lib*: libneuron's training loop "
                 "(`train_run`), each step timed between progress callbacks; *numpy*: hand-written gradients; "
                 "*torch*: autograd + `torch.optim.SGD`; *http*: one `POST /train` of N steps "
                 "(`history_every` 0) per round after a warm-up call of %d steps, wall-clock of the request ÷ N (spread over rounds). "
                 "Loss at θ0 and after the %d warm-up steps agree across runners to %.1e (relative). %s" %
                 (WARMUP, WARMUP, R.get("loss_check_rel", float("nan")), settle_note(R)))
        L.append("")
        runners = R["runners"]
        L.append("| workload | N | " + " | ".join(runners) + " | lib ÷ numpy | lib ÷ torch | lib ÷ faster peer | floor | floor ÷ lib |")
        L.append("|---|---|" + "---|" * len(runners) + "---|---|---|---|---|")
        for w in W:
            rr = res[w["name"]]
            s = {}
            for r in runners:
                if r == "http":
                    xs = [x["wall_ms"] * 1e3 / x["steps"] for x in rr[r]]
                else:
                    xs = [t for x in rr[r] for t in x["step_us"]]
                s[r] = summary(xs)
            step[w["name"]] = s
            lib = s["lib"]["median"]
            ratios = {p: lib / s[p]["median"] for p in ("numpy", "torch") if p in s}
            faster = min((s[p]["median"], p) for p in ("numpy", "torch") if p in s) if ratios else None
            fl = floor_us(w, R, xbw)
            row = "| %s %s | %d | " % (w["name"], w["title"], w["steps"])
            row += " | ".join(fmt_spread(s[r]) for r in runners)
            row += " | %s | %s | %s | %s | %s |" % (
                "%.3g×" % ratios["numpy"] if "numpy" in ratios else "—",
                "%.3g×" % ratios["torch"] if "torch" in ratios else "—",
                "%.3g× (%s)" % (lib / faster[0], faster[1]) if faster else "—",
                fmt_time_us(fl[0]) + " " + fl[1] if fl else "—",
                "%.0f%%" % (100 * fl[0] / lib) if fl else "—")
            L.append(row)
        L.append("")
        blas = []
        for r in ("numpy", "torch"):
            tp = next((x.get("threadpools") for w in W for x in res[w["name"]].get(r, []) if x.get("threadpools")), None)
            if tp:
                blas.append("%s: %s" % (r, "; ".join("%s %s, core %s, %s threads" % (
                    p.get("internal_api"), p.get("version"), p.get("architecture"), p.get("num_threads")) for p in tp)))
        lib0 = next((x for w in W for x in res[w["name"]]["lib"]), None)
        if lib0:
            blas.insert(0, "libneuron: OpenBLAS core %s, %s threads" % (lib0.get("corename"), lib0.get("threads")))
        if blas:
            L.append("BLAS each runner used (threadpoolctl for the peers): " + " · ".join(blas) + ".")
            L.append("")
        L.append("Floors, measured in this run: W1, W5 one read of X at the *read of X* bandwidth above; W2, W3 "
                 "OpenBLAS's `cblas_dgemm` alone on the step's own products (below; fastest round). W4 has none "
                 "worth the name. *floor ÷ lib* is the fraction of the floor reached.")
        L.append("")
        prods = R.get("products") or {}
        if prods:
            L.append("<details><summary>The products of one step, timed alone in `cblas_dgemm` (the W2, W3 floors; "
                     "best of 5 calls each, per round)</summary>")
            L.append("")
            L.append("| workload | op | m | n | k | time (per round) |")
            L.append("|---|---|---|---|---|---|")
            for name, runs in prods.items():
                for i, pr in enumerate(runs[0]["products"] if runs else []):
                    L.append("| %s | %s | %d | %d | %d | %s |" % (name, pr["op"], pr["m"], pr["n"], pr["k"], ", ".join(
                        fmt_time_us(r["products"][i]["ms"] * 1e3) for r in runs)))
                L.append("| %s | **all** | | | | %s (%.3g GFLOP) |" % (name, ", ".join(
                    fmt_time_us(r["ms"] * 1e3) for r in runs), runs[0]["gflop"] if runs else 0))
            L.append("")
            L.append("</details>")
        L.append("")
        # per-round medians, to show stability
        L.append("<details><summary>Per-round medians</summary>")
        L.append("")
        L.append("| workload | " + " | ".join(runners) + " |")
        L.append("|---|" + "---|" * len(runners))
        for w in W:
            rr = res[w["name"]]
            cells = []
            for r in runners:
                if r == "http":
                    cells.append(", ".join(fmt_time_us(x["wall_ms"] * 1e3 / x["steps"]) for x in rr[r]))
                else:
                    cells.append(", ".join(fmt_time_us(statistics.median(x["step_us"])) for x in rr[r]))
            L.append("| %s | %s |" % (w["name"], " | ".join(cells)))
        L.append("")
        L.append("</details>")
        L.append("")

        # matrix products inside libneuron's step
        L.append("### Matrix products inside libneuron's step")
        L.append("")
        L.append("Every `cblas_dgemm` libneuron makes, timed in place (`-Wl,--wrap`) over %d steps per round, "
                 "medians over rounds. libneuron cuts a large product into parts that its compute threads run "
                 "at once: *thread time* adds up every call's own duration, *wall time* counts the time during "
                 "which at least one product runs, and the share of the step and the GFLOP/s are taken over "
                 "wall time. W1, W2 and W5 make no products: their one-pass kernels read X once." % PROFILE)
        L.append("")
        L.append("| workload | dgemm calls/step | GFLOP/step | dgemm thread time/step | dgemm wall time/step | "
                 "share of step | GFLOP/s | of dgemm ceiling |")
        L.append("|---|---|---|---|---|---|---|---|")
        gemm = {}
        for w in W:
            gs = [x["gemm"] for x in res[w["name"]]["lib"] if x.get("gemm")]
            if not gs or gs[0]["calls_per_step"] == 0:
                continue
            ms = statistics.median(g["ms_per_step"] for g in gs)
            wall = statistics.median(g.get("wall_ms_per_step", g["ms_per_step"]) for g in gs)
            gf = statistics.median(g["gflop_per_step"] for g in gs)
            sm = statistics.median(g["step_ms"] for g in gs)
            rate = gf / (wall / 1e3) if wall > 0 else float("nan")
            gemm[w["name"]] = rate / gt if gt == gt else float("nan")
            L.append("| %s | %.1f | %.4g | %s | %s | %.0f%% | %.1f | %.0f%%%s |" % (
                w["name"], gs[0]["calls_per_step"], gf, fmt_time_us(ms * 1e3), fmt_time_us(wall * 1e3),
                100 * wall / sm if sm else 0, rate, 100 * gemm[w["name"]],
                " (above the ceiling: it was measured low)" if gemm[w["name"]] > 1 else ""))
        L.append("")

        L.append("<details><summary>Products per step (last round), by shape: op is the transposition of A and B, "
                 "C[m×n] = op(A)[m×k]·op(B)[k×n], row major</summary>")
        L.append("")
        L.append("| workload | op | m | n | k | calls/step | time/step |")
        L.append("|---|---|---|---|---|---|---|")
        for w in W:
            gs = [x["gemm"] for x in res[w["name"]]["lib"] if x.get("gemm") and x["gemm"].get("shapes")]
            for sh in (gs[-1]["shapes"] if gs else []):
                L.append("| %s | %s | %d | %d | %d | %.1f | %s |" % (w["name"], sh["op"], sh["m"], sh["n"], sh["k"],
                                                                sh["calls_per_step"], fmt_time_us(sh["ms_per_step"] * 1e3)))
        L.append("")
        L.append("</details>")
        L.append("")

        # HTTP vs library for the same steps
        L.append("### One train call over HTTP vs the library, same N steps")
        L.append("")
        L.append("| workload | N | library `train_run` | HTTP wall-clock | HTTP `elapsed_ms` | wall ÷ library | "
                 "data ingest (raw, ≤ 32 MiB batches) |")
        L.append("|---|---|---|---|---|---|---|")
        http_ratio = {}
        for w in W:
            rr = res[w["name"]]
            lib_ms = statistics.median(x["train_call_ms"] for x in rr["lib"])
            wall = statistics.median(x["wall_ms"] for x in rr["http"])
            el = statistics.median(x["elapsed_ms"] for x in rr["http"])
            http_ratio[w["name"]] = wall / lib_ms
            mb = w["gen"]["bytes"] / 1e6
            L.append("| %s | %d | %s | %s | %s | %.2f× | %.0f MB in %.2f s (%.0f MB/s) |" % (
                w["name"], w["steps"], fmt_time_us(lib_ms * 1e3), fmt_time_us(wall * 1e3), fmt_time_us(el * 1e3),
                wall / lib_ms, mb, w["http_ingest_s"], mb / w["http_ingest_s"] if w["http_ingest_s"] else 0))
        L.append("")

        # targets from the per-step table
        def peer_ratio(name):
            s = step[name]
            ps = [(s[p]["median"], p) for p in ("numpy", "torch") if p in s]
            if not ps:
                return None
            m = min(ps)
            return s["lib"]["median"] / m[0], m[1]

        for name, lim in (("W1", 1.3), ("W5", 1.3), ("W2", 1.05), ("W3", 1.05)):
            w = next(x for x in W if x["name"] == name)
            fl = floor_us(w, R, xbw)
            what = ("one read of X at the read-of-X rate" if name in ("W1", "W5")
                    else "its own products in `cblas_dgemm`")
            if fl:
                r = step[name]["lib"]["median"] / fl[0]
                targets.append(("%s step ≤ %s× %s (%s)" % (name, lim, what, fmt_time_us(fl[0])), "%.2f×" % r, r <= lim))
            else:
                targets.append(("%s step ≤ %s× %s" % (name, lim, what), "not measured", None))
        for name in ("W1", "W5", "W2", "W3"):
            pr = peer_ratio(name)
            targets.append(("%s step vs the faster peer (reported, no threshold)" % name,
                            "%.2f× (%s)" % pr if pr else "no peer ran", None))
        s4 = step.get("W4", {})
        if "torch" in s4:
            r = s4["lib"]["median"] / s4["torch"]["median"]
            targets.append(("W4 step ≤ 1/100 of PyTorch's", "1/%.0f (%.4f×)" % (1 / r, r), r <= 0.01))
        else:
            targets.append(("W4 step ≤ 1/100 of PyTorch's", "torch not run", None))
        if "numpy" in s4:
            r = s4["lib"]["median"] / s4["numpy"]["median"]
            targets.append(("W4 step ≤ 1/10 of numpy's", "1/%.1f (%.3f×)" % (1 / r, r), r <= 0.1))
        else:
            targets.append(("W4 step ≤ 1/10 of numpy's", "numpy not run", None))
        for name in ("W1", "W2", "W3"):
            if name in http_ratio:
                targets.append(("%s train call over HTTP ≤ 1.1× the library's time" % name,
                                "%.2f×" % http_ratio[name], http_ratio[name] <= 1.1))

    mb = R.get("mb")
    if mb:
        L.append("## Mini-batch epochs (shuffled, plain SGD)")
        L.append("")
        L.append("One epoch over all rows at each batch size, median (all epochs). *lib*: `train_run` with "
                 "`epochs` 1 and `batch_size`; *torch*: `nn.Sequential`, `nn.CrossEntropyLoss`, `torch.randperm` "
                 "and indexing per batch, `torch.optim.SGD`; *http*: `POST /train {\"epochs\":1,\"batch_size\":B}` "
                 "with the default `history_every` 1 (a history row per batch), wall-clock. Each runner first "
                 "runs %d untimed batches%s; the runners of one batch size run back to back, order rotated each "
                 "round. lib and http include the full-data evaluation a train call ends with (`loss_after` on every "
                 "row; `loss_before` comes from the call before, which ended at the same θ); torch's epoch has "
                 "none. *floor*: OpenBLAS's `cblas_dgemm` alone (its own threads) on the epoch's products, timed "
                 "after the runners of each round (`bench_lib products --batch-size B`, fastest round): a step's "
                 "products once per batch (forward, weight gradients, the hidden layer's input gradient) plus the "
                 "forward products on every row that `loss_after` needs; the split shows the two. Where 0.8× "
                 "PyTorch's epoch is below the floor (torch ÷ floor under 1.25), no code that computes `loss_after` "
                 "with this BLAS meets the target." % (MB_WARMUP, ", then repeats them, untimed, for %.1f s" % R["settle_s"] if R.get("settle_s") else ""))
        L.append("")
        mbr = R["mb_runners"]
        L.append("| workload | batch | " + " | ".join(mbr) + " | lib ÷ torch | http ÷ torch | floor (batches + loss_after) "
                 "| lib ÷ floor | torch ÷ floor |")
        L.append("|---|---|" + "---|" * len(mbr) + "---|---|---|---|---|")
        for w in R.get("mb_workloads", []):
            for b in BATCH_SIZES:
                cell = mb[w["name"]][str(b)]
                med = {r: statistics.median(t for x in cell[r] for t in x["epoch_ms"]) for r in mbr if cell[r]}
                fl = (R.get("mb_floor") or {}).get(w["name"], {}).get(str(b)) or []
                best = min(fl, key=lambda x: x["ms"]) if fl else None
                L.append("| %s %s | %d | %s | %s | %s | %s | %s | %s |" % (
                    w["name"], w["title"], b, " | ".join("%s (%s)" % (fmt_time_us(med[r] * 1e3), ", ".join(
                        "%.0f" % t for x in cell[r] for t in x["epoch_ms"])) for r in mbr),
                    "%.2f×" % (med["lib"] / med["torch"]) if "torch" in med else "—",
                    "%.2f×" % (med["http"] / med["torch"]) if "torch" in med else "—",
                    "%s (%d × %s + %s)" % (fmt_time_us(best["ms"] * 1e3), best["batches"],
                                           fmt_time_us(best["step_ms"] * 1e3),
                                           fmt_time_us(best["loss_after_ms"] * 1e3)) if best else "—",
                    "%.2f×" % (med["lib"] / best["ms"]) if best else "—",
                    "%.2f×" % (med["torch"] / best["ms"]) if best and "torch" in med else "—"))
                for r in ("lib", "http"):
                    if "torch" in med:
                        q = med[r] / med["torch"]
                        targets.append(("%s epoch at batch %d %s ≤ 0.8× PyTorch's" % (
                            w["name"], b, "through the library" if r == "lib" else "over HTTP"), "%.2f×" % q, q <= 0.8))
                    else:
                        targets.append(("%s epoch at batch %d %s ≤ 0.8× PyTorch's" % (
                            w["name"], b, "through the library" if r == "lib" else "over HTTP"), "torch not run", None))
        L.append("")

    # lbfgs
    lb = R.get("lbfgs")
    if lb:
        L.append("## W1 to the optimum: L-BFGS")
        L.append("")
        sk = lb.get("sklearn")
        lib = lb.get("lib")
        sk_s = None
        if sk:
            sk_s = statistics.median(r["seconds"] for r in sk["runs"])
            L.append("- scikit-learn `LogisticRegression(penalty=None, solver=\"lbfgs\", tol=%g)`: median %.3f s over %d "
                     "fits (%s iterations), loss gap to the optimum %s; optimum L* = %.12g from a tol=1e-12 fit "
                     "(%d iterations)." % (sk["tol"], sk_s, len(sk["runs"]), ", ".join(str(r["n_iter"]) for r in sk["runs"]),
                                          ", ".join("%.1e" % r["gap"] for r in sk["runs"]), sk["l_star"], sk["ref_n_iter"]))
        else:
            L.append("- scikit-learn not run: no reference optimum.")
        if lib and lib.get("available"):
            runs = lib["runs"]
            lib_s = statistics.median(r["seconds"] for r in runs)
            reached = all(r["stopped"] == "target_loss" for r in runs) if sk else None
            L.append("- libneuron `\"method\":\"lbfgs\"` from the workload's θ0, stopping at loss ≤ L* + 1e-4: "
                     "median %.3f s, %s steps, stopped: %s, final loss %s." % (
                         lib_s, ", ".join(str(r["steps_run"]) for r in runs), ", ".join(r["stopped"] for r in runs),
                         ", ".join("%.10g" % r["loss_after"] if r["loss_after"] is not None else "—" for r in runs)))
            if sk_s is not None:
                targets.append(("W1 lbfgs to within 1e-4 of the optimum, time ≤ scikit-learn's",
                                "%.3f s vs %.3f s (%.2f×)%s" % (lib_s, sk_s, lib_s / sk_s,
                                                                 "" if reached else ", optimum NOT reached"),
                                bool(reached) and lib_s <= sk_s))
            else:
                targets.append(("W1 lbfgs to within 1e-4 of the optimum, time ≤ scikit-learn's",
                                "%.3f s, no reference" % lib_s, None))
        else:
            reason = lib.get("reason", "?") if lib else "not run"
            L.append("- libneuron lbfgs: **not available** (%s)." % reason)
            targets.append(("W1 lbfgs to within 1e-4 of the optimum, time ≤ scikit-learn's",
                            "not available" + (" (scikit-learn: %.3f s)" % sk_s if sk_s is not None else ""), False))
        L.append("")

    micro = R.get("micro")
    if micro is not None:
        L.append("## Requests per second (wrk -t2 -c%d -d%ds, loopback, medians of %d rounds)" %
                 (micro["conns"], micro["seconds"], len(micro["healthz"]["bare"])))
        L.append("")
        L.append("| endpoint | bare libmicrohttpd (bench/bare_mhd) | neurond | neurond ÷ bare | p50 latency bare / neurond |")
        L.append("|---|---|---|---|---|")
        for ep, title, lim in (("healthz", "GET /healthz", 0.7), ("predict", "POST /predict, tiny model, 1 row", 0.5)):
            b = statistics.median(micro[ep]["bare"])
            n = statistics.median(micro[ep]["neurond"])
            L.append("| %s | %.0f req/s (%s) | %.0f req/s (%s) | %.0f%% | %s / %s |" % (
                title, b, ", ".join("%.0f" % x for x in micro[ep]["bare"]), n,
                ", ".join("%.0f" % x for x in micro[ep]["neurond"]), 100 * n / b,
                micro["p50"].get(ep + "-bare"), micro["p50"].get(ep + "-neurond")))
            targets.append(("%s ≥ %d%% of a bare libmicrohttpd server's requests/s" % (title, 100 * lim),
                            "%.0f%%" % (100 * n / b), n / b >= lim))
        L.append("")
        L.append("neurond runs with its defaults (log level info, one access-log line per request, to a file); "
                 "bare_mhd answers the same JSON with the same headers, same MHD threading mode.")
        L.append("")
    elif "micro" in R:   # None: the run had no wrk (absent: an --only-pg run)
        targets.append(("GET /healthz ≥ 70% of a bare libmicrohttpd server", "wrk not installed", None))
        targets.append(("POST /predict (tiny) ≥ 50% of a bare libmicrohttpd server", "wrk not installed", None))

    ing = R.get("ingest")
    if ing:
        L.append("## Ingest over HTTP (POST /batches, one body, fresh daemon each time)")
        L.append("")
        L.append("| format | body | rows | MB/s (median; all) | float64 size of the data | peak RSS (VmHWM) | "
                 "RSS before | peak ÷ float64 size |")
        L.append("|---|---|---|---|---|---|---|---|")
        disk = R.get("disk_write_mbs") or []
        disk_mbs = statistics.median(disk) if disk else float("nan")
        for fmt, lim in (("csv", 150), ("json", 50), ("raw", 0.8 * disk_mbs)):
            xs = ing[fmt]
            mbs = [x["bytes"] / 1e6 / x["seconds"] for x in xs]
            hwm = statistics.median(x["hwm_kb"] for x in xs) * 1024
            f64 = xs[0]["float64_bytes"]
            L.append("| %s | %.0f MB | %d | %.0f (%s) | %.0f MB | %.0f MB | %.0f MB | %.2f× |" % (
                fmt, xs[0]["bytes"] / 1e6, xs[0]["rows"], statistics.median(mbs), ", ".join("%.0f" % m for m in mbs),
                f64 / 1e6, hwm / 1e6, statistics.median(x["rss0_kb"] for x in xs) * 1024 / 1e6, hwm / f64))
            what = ("%.0f MB/s" % lim if fmt != "raw" else
                    "0.8× the durable write rate (%.0f MB/s) = %.0f MB/s" % (disk_mbs, lim))
            targets.append(("ingest %s ≥ %s" % (fmt.upper() if fmt != "raw" else "raw float64", what),
                            "%.0f MB/s" % statistics.median(mbs), statistics.median(mbs) >= lim))
        c = ing["csv"]
        hwm = statistics.median(x["hwm_kb"] for x in c) * 1024
        targets.append(("peak RSS ingesting a %.0f MB CSV ≤ 2.5× its float64 size (%.0f MB)" %
                        (c[0]["bytes"] / 1e6, c[0]["float64_bytes"] / 1e6),
                        "%.0f MB = %.2f×" % (hwm / 1e6, hwm / c[0]["float64_bytes"]),
                        hwm <= 2.5 * c[0]["float64_bytes"]))
        L.append("")
        L.append("Bodies: rows of 100 features in [-1, 1) and a 0/1 label; CSV and JSON print each number with "
                 "`%.6g` (about 9 bytes a value), raw is float64. MB = 10⁶ bytes; MB/s = body bytes ÷ wall-clock "
                 "from sending the request to reading the answer (the batch is committed to SQLite by then). "
                 "Peak RSS is the daemon's VmHWM after the request, the whole process.")
        if disk:
            L.append("")
            L.append("Durable write rate of the database's file system in this run (256 MiB written, then one "
                     "fdatasync; once per round): median %.0f MB/s (%s). A stored batch is written to the WAL "
                     "and synced before the answer, so no format can be ingested faster than its float64 size "
                     "can be written: the raw target is 0.8× this rate." %
                     (statistics.median(disk), ", ".join("%.0f" % x for x in disk)))
        L.append("")

    hist = R.get("history")
    if hist:
        h1 = statistics.median(x["wall_ms"] for x in hist[1])
        h0 = statistics.median(x["wall_ms"] for x in hist[0])
        L.append("## History cost (tiny net, %d-step train call)" % hist["steps"])
        L.append("")
        L.append("| history_every | wall-clock (median; all) | elapsed_ms (median) |")
        L.append("|---|---|---|")
        for k in (1, 0):
            L.append("| %d | %s (%s) | %s |" % (k, fmt_time_us(statistics.median(x["wall_ms"] for x in hist[k]) * 1e3),
                                                 ", ".join(fmt_time_us(x["wall_ms"] * 1e3) for x in hist[k]),
                                                 fmt_time_us(statistics.median(x["elapsed_ms"] for x in hist[k]) * 1e3)))
        L.append("")
        targets.append(("%d-step train call recording every step ≤ 1.2× with history_every 0" % hist["steps"],
                        "%.2f×" % (h1 / h0), h1 / h0 <= 1.2))

    L += bench_pg.render(R.get("pg"), targets)

    # targets first in the file: build the final document
    head, tail = L[:], []
    T = ["## Targets, this run", ""]
    if smoke:
        T.append("Smoke sizes: the ✓/✗ below only show the harness computes them.")
        T.append("")
    T.append("| target | figure | |")
    T.append("|---|---|---|")
    for name, fig, ok in targets:
        T.append("| %s | %s | %s |" % (name, fig, mark(ok)))
    met = sum(1 for t in targets if t[2])
    T.append("")
    T.append("%d of %d targets met (rows without a mark are reported, not judged)." %
             (met, sum(1 for t in targets if t[2] is not None)))
    T.append("")
    # insert the targets after the header block (first blank line after the bullets)
    idx = next((i for i, l in enumerate(head) if l.startswith("## ")), len(head))
    return "\n".join(head[:idx] + T + head[idx:] + tail) + "\n"


def settle_note(R):
    """The settling between warm-up and timing, as the report states it (bench/README.md)."""
    if not R.get("settle_s"):
        return ""
    return ("After its warm-up every runner keeps working, untimed, for %.1f s (its warm-up again and again; "
            "the daemon: calls of N steps), then times: a pause instead ends in a slow spell on this VM." % R["settle_s"])


def floor_us(w, R, read_gbs):
    """(floor in µs, how) for one step of a workload, measured in this run: one read of X at the
    read bandwidth (W1, W5), the step's own products in cblas_dgemm, fastest round (W2, W3)."""
    g = w.get("gen")
    if not g:
        return None
    if w["name"] in ("W1", "W5"):
        if read_gbs != read_gbs:
            return None
        return g["x_bytes"] / (read_gbs * 1e9) * 1e6, "(read X)"
    runs = (R.get("products") or {}).get(w["name"])
    if runs:
        return min(r["ms"] for r in runs) * 1e3, "(dgemm)"
    return None


if __name__ == "__main__":
    sys.exit(main())
