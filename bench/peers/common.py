"""bench/peers/common.py -- what the numpy and PyTorch peers share: the workload file, the data
and θ0 written by `bench_lib gen`, the parameter layout, and the JSON line they print.

Layout (docs/api.md "Parameter layout"): every dense layer is one matrix [units_out, 1 + units_in]
with the bias in column 0, layers W1..WL in order, each row major, all in one flat array. The
peers keep each layer as a contiguous weight matrix [units_out, units_in] plus a bias vector,
their natural (and fastest) form; the numbers are the same.
"""
import json
import os
import sys
import time

import numpy as np


def load(workload_path, data_dir):
    with open(workload_path) as f:
        w = json.load(f)
    spec = w["spec"]
    kind = spec["kind"]
    n_in = spec["inputs"]
    if kind == "mlp":
        sizes = [n_in] + [h["units"] for h in spec.get("hidden", [])] + [spec.get("outputs", 1)]
        acts = [h["activation"] for h in spec.get("hidden", [])] + [spec.get("output_activation", "linear")]
    elif kind == "logistic":
        sizes, acts = [n_in, 1], ["sigmoid"]
    elif kind == "softmax":
        sizes, acts = [n_in, spec["classes"]], ["softmax"]
    elif kind == "linear":
        sizes, acts = [n_in, spec.get("outputs", 1)], ["linear"]
    else:
        raise SystemExit("peer: kind %s is not benchmarked" % kind)
    loss = spec["loss"]            # the workload files spell loss and reduction out
    if spec.get("reduction", "mean") != "mean":
        raise SystemExit("peer: only reduction mean is benchmarked")
    opt = spec.get("optimizer", {})
    if opt.get("method", "sgd") != "sgd" or opt.get("weight_decay", 0) != 0:
        raise SystemExit("peer: only plain sgd is benchmarked")
    lr = float(opt.get("learning_rate", 0.1))

    n_y = 1 if acts[-1] in ("softmax", "sigmoid") else sizes[-1]
    cols = n_in + n_y
    raw = np.fromfile(os.path.join(data_dir, w["name"] + ".data"), dtype="<f8")
    if raw.size != w["rows"] * cols:
        raise SystemExit("peer: %s.data has %d numbers, expected %d" % (w["name"], raw.size, w["rows"] * cols))
    raw = raw.reshape(w["rows"], cols)
    X = np.ascontiguousarray(raw[:, :n_in])
    Y = np.ascontiguousarray(raw[:, n_in:])
    theta = np.fromfile(os.path.join(data_dir, w["name"] + ".theta0"), dtype="<f8")
    layers, off = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        W = theta[off:off + b * (a + 1)].reshape(b, a + 1)
        layers.append((np.ascontiguousarray(W[:, 1:]), np.ascontiguousarray(W[:, 0])))
        off += b * (a + 1)
    if off != theta.size:
        raise SystemExit("peer: theta0 has %d numbers, layout needs %d" % (theta.size, off))
    return {"name": w["name"], "X": X, "Y": Y, "layers": layers, "acts": acts, "loss": loss,
            "lr": lr, "sizes": sizes}


def threadpools():
    """What BLAS / OpenMP the process runs, as threadpoolctl sees it (or null)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    keep = ("internal_api", "version", "num_threads", "architecture", "threading_layer", "filepath")
    return [{k: p.get(k) for k in keep} for p in threadpool_info()]


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def args(argv, extra=None):
    """peer.py DIR WORKLOAD.json [WORKLOAD.json ...] [--steps N] [--warmup K] [--threads T] [--settle-ms S]

    Several workloads in one process save the interpreter's start-up (torch takes seconds) in
    smoke runs; each workload still gets its own JSON line. --steps defaults to the workload
    file's "steps". `extra` names more integer options (default 0), filled in place."""
    if len(argv) < 3:
        raise SystemExit("usage: %s DIR WORKLOAD.json... [--steps N] [--warmup K] [--threads T] [--settle-ms S]" % argv[0])
    global SETTLE_MS
    opts = {"--steps": 0, "--warmup": 3, "--threads": 0, "--settle-ms": 0}
    if extra is not None:
        opts.update(extra)
    files = []
    i = 2
    while i < len(argv):
        if argv[i].startswith("--"):
            if argv[i] not in opts or i + 1 >= len(argv):
                raise SystemExit("peer: unknown argument %s" % argv[i])
            opts[argv[i]] = int(argv[i + 1])
            i += 2
        else:
            files.append(argv[i])
            i += 1
    if extra is not None:
        extra.update({k: opts[k] for k in extra})
    SETTLE_MS = opts["--settle-ms"]
    return argv[1], files, opts["--steps"], opts["--warmup"], opts["--threads"]


SETTLE_MS = 0


def settle(work, restore=None):
    """Between the warm-up and the timed steps: work() again and again, untimed, until
    --settle-ms have passed (bench_lib's bench_settle says why), then restore(), when given,
    puts the parameters back as the warm-up left them, so full-batch steps start from the same
    θ however many of them a runner fitted in (epochs keep where settling left them, as
    bench_lib's do). Every runner settles alike."""
    if SETTLE_MS <= 0:
        return
    end = time.perf_counter() + SETTLE_MS / 1e3
    while time.perf_counter() < end:
        work()
    if restore is not None:
        restore()


def keep_arrays(arrays):
    """A restore() for settle(): numpy arrays that work() updates in place, as they are now."""
    saved = [a.copy() for a in arrays]

    def restore():
        for a, s in zip(arrays, saved):
            a[...] = s
    return restore


def steps_of(workload_path, steps):
    if steps > 0:
        return steps
    with open(workload_path) as f:
        return int(json.load(f).get("steps", 20))
