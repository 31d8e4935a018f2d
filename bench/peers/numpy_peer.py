"""bench/peers/numpy_peer.py -- the numpy peer: one full-batch gradient step with hand-written
gradients and a plain SGD update, per step timed with perf_counter_ns.

    numpy_peer.py DIR WORKLOAD.json... [--steps N] [--warmup K] [--settle-ms S]

Prints one JSON line per workload: loss at θ0 and after the K warm-up steps (cross-checked against
libneuron by scripts/bench), the N per-step times in µs, and the BLAS threadpoolctl sees.
One-output models (W1, W5) are written with a weight vector (matrix-vector products, as anyone
would); the others keep weights [out, in] with weight gradients G.T @ X (the fast orientation for
OpenBLAS's thin products: W2's 10-column product is ~1.8x slower written X.T @ G), biases
G.sum(0). Sigmoid is 0.5(1 + tanh(z/2)) and the logistic loss np.logaddexp(0, z) - yz: one
transcendental each, no second exp. Run it with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (scripts/bench does).
"""
import sys
import time

import numpy as np

import common


def sigmoid(z):
    """σ(z) with one transcendental and no overflow: 1/(1+exp(-z)) takes an exp, a division and
    warns on large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def act_fwd(name, z):
    if name == "sigmoid":
        return sigmoid(z)
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


def make_vector_step(w):
    """One-output models (logistic, linear regression) the way anyone writes them: a weight
    vector and a scalar bias, X @ w and X.T @ g as matrix-vector products."""
    X, lr, loss_kind = w["X"], w["lr"], w["loss"]
    y = np.ascontiguousarray(w["Y"][:, 0])
    W, b = w["layers"][0]
    wv = W[0]                       # a view: the update lands in the layer
    m = X.shape[0]
    logistic = w["acts"][-1] == "sigmoid"
    if not (logistic and loss_kind == "bce") and not (w["acts"][-1] == "linear" and loss_kind == "l2"):
        raise SystemExit("numpy peer: output %s with loss %s is not benchmarked" % (w["acts"][-1], loss_kind))

    def loss_grad(grad):
        z = X @ wv + b[0]
        if logistic:
            loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
            if not grad:
                return loss
            g = (sigmoid(z) - y) / m
        else:
            d = z - y
            loss = float(d @ d / m)
            if not grad:
                return loss
            g = d * (2.0 / m)
        wv[...] -= lr * (X.T @ g)     # in place: wv and b stay the layer's own arrays
        b[0] -= lr * g.sum()
        return loss

    return loss_grad


def make_step(w):
    if len(w["layers"]) == 1 and w["sizes"][-1] == 1:
        return make_vector_step(w)
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
            loss = float(np.mean(np.logaddexp(0.0, z) - z * Y))
            if not grad:
                return loss
            g = (sigmoid(z) - Y) / m
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
    common.settle(lambda: step(True), common.keep_arrays([a for layer in w["layers"] for a in layer]))
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
