"""bench/peers/numpy_peer.py -- the numpy peer: one full-batch gradient step with hand-written
gradients and a plain SGD update, per step timed with perf_counter_ns.

    numpy_peer.py DIR WORKLOAD.json... [--steps N] [--warmup K]

Prints one JSON line per workload: loss at θ0 and after the K warm-up steps (cross-checked against
libneuron by scripts/bench), the N per-step times in µs, and the BLAS threadpoolctl sees.
Weight gradients are G.T @ X (the fast orientation for OpenBLAS's thin products: W2's
10-column product is ~1.8x slower written X.T @ G), biases G.sum(0). Run it with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (scripts/bench does).
"""
import sys
import time

import numpy as np

import common


def act_fwd(name, z):
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    return z


def act_bwd(name, a, g):
    """g * f'(z), from the activation's output a."""
    if name == "sigmoid":
        return g * a * (1.0 - a)
    if name == "tanh":
        return g * (1.0 - a * a)
    if name == "relu":
        return g * (a > 0)
    return g


def make_step(w):
    X, Y, layers, acts, loss_kind, lr = w["X"], w["Y"], w["layers"], w["acts"], w["loss"], w["lr"]
    m = X.shape[0]
    out_act = acts[-1]
    labels = Y[:, 0].astype(np.intp) if out_act == "softmax" else None
    rows = np.arange(m)

    def loss_grad(grad):
        # forward
        a, saved = X, []
        for (W, b), name in zip(layers[:-1], acts[:-1]):
            a = act_fwd(name, a @ W.T + b)
            saved.append(a)
        W, b = layers[-1]
        z = a @ W.T + b
        # loss and dL/dz at the output
        if out_act == "softmax":                         # cce from the logits
            zmax = z.max(axis=1, keepdims=True)
            e = np.exp(z - zmax)
            s = e.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(s[:, 0]) + zmax[:, 0] - z[rows, labels]))
            if not grad:
                return loss
            g = e / s
            g[rows, labels] -= 1.0
            g /= m
        elif out_act == "sigmoid" and loss_kind == "bce":  # bce from the logit, stably
            loss = float(np.mean(np.maximum(z, 0.0) - z * Y + np.log1p(np.exp(-np.abs(z)))))
            if not grad:
                return loss
            g = (1.0 / (1.0 + np.exp(-z)) - Y) / m
        elif out_act == "linear" and loss_kind == "l2":
            d = z - Y
            loss = float(np.einsum("ij,ij->", d, d) / m)
            if not grad:
                return loss
            g = d * (2.0 / m)
        else:
            raise SystemExit("numpy peer: output %s with loss %s is not benchmarked" % (out_act, loss_kind))
        # backward: gradients of every layer, then the update
        grads = []
        for li in range(len(layers) - 1, -1, -1):
            W, b = layers[li]
            inp = saved[li - 1] if li > 0 else X
            grads.append((g.T @ inp, g.sum(axis=0)))
            if li > 0:
                g = act_bwd(acts[li - 1], saved[li - 1], g @ W)
        for (W, b), (gW, gb) in zip(reversed(layers), grads):
            W -= lr * gW
            b -= lr * gb
        return loss

    return loss_grad


def run(wpath, ddir, steps, warmup):
    w = common.load(wpath, ddir)
    step = make_step(w)
    loss0 = step(False)
    for _ in range(warmup):
        step(True)
    lossk = step(False)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter_ns()
        step(True)
        times.append((time.perf_counter_ns() - t0) / 1e3)
    common.emit({"runner": "numpy", "workload": w["name"], "numpy": np.__version__,
                 "loss0": loss0, "lossk": lossk, "warmup": warmup, "steps": steps,
                 "step_us": [round(t, 3) for t in times], "threadpools": common.threadpools()})


def main():
    ddir, files, steps, warmup, _threads = common.args(sys.argv)
    for wpath in files:
        run(wpath, ddir, common.steps_of(wpath, steps), warmup)


if __name__ == "__main__":
    main()
