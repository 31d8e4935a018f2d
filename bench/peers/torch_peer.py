"""bench/peers/torch_peer.py -- the PyTorch peer: one full-batch step with autograd and
torch.optim.SGD, float64, per step timed with perf_counter_ns.

    torch_peer.py DIR WORKLOAD.json... [--steps N] [--warmup K] [--threads T]

torch.set_num_threads(T) (ours); start it with OMP_WAIT_POLICY=PASSIVE in the environment
(scripts/bench does): without it PyTorch's OpenMP pool spins against OpenBLAS's threads on a
2-core machine and runs up to 2.5x slower, which is not PyTorch's best configuration.
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

import common


def main():
    ddir, files, steps, warmup, threads = common.args(sys.argv)
    if threads > 0:
        torch.set_num_threads(threads)
    for wpath in files:
        run(wpath, ddir, common.steps_of(wpath, steps), warmup)


def run(wpath, ddir, steps, warmup):
    w = common.load(wpath, ddir)
    X = torch.from_numpy(w["X"])
    Y = torch.from_numpy(w["Y"])
    params = []
    for W, b in w["layers"]:
        params += [torch.from_numpy(W.copy()).requires_grad_(), torch.from_numpy(b.copy()).requires_grad_()]
    acts, loss_kind, out_act = w["acts"], w["loss"], w["acts"][-1]
    labels = Y[:, 0].long() if out_act == "softmax" else None
    m = X.shape[0]
    hidden = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "linear": lambda z: z}

    def forward():
        a = X
        for i, name in enumerate(acts[:-1]):
            a = hidden[name](F.linear(a, params[2 * i], params[2 * i + 1]))
        z = F.linear(a, params[-2], params[-1])
        if out_act == "softmax":
            return F.cross_entropy(z, labels)
        if out_act == "sigmoid" and loss_kind == "bce":
            return F.binary_cross_entropy_with_logits(z, Y)
        if out_act == "linear" and loss_kind == "l2":
            return F.mse_loss(z, Y, reduction="sum") / m
        raise SystemExit("torch peer: output %s with loss %s is not benchmarked" % (out_act, loss_kind))

    opt = torch.optim.SGD(params, lr=w["lr"])

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        return loss

    with torch.no_grad():
        loss0 = float(forward())
    for _ in range(warmup):
        step()
    with torch.no_grad():
        lossk = float(forward())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter_ns()
        step()
        times.append((time.perf_counter_ns() - t0) / 1e3)
    common.emit({"runner": "torch", "workload": w["name"], "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                 "loss0": loss0, "lossk": lossk, "warmup": warmup, "steps": steps,
                 "step_us": [round(t, 3) for t in times], "threadpools": common.threadpools()})


if __name__ == "__main__":
    main()
