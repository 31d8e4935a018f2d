"""bench/peers/torch_peer.py -- the PyTorch peer: one full-batch step with autograd and
torch.optim.SGD, float64, per step timed with perf_counter_ns.

    torch_peer.py DIR WORKLOAD.json... [--steps N] [--warmup K] [--threads T] [--settle-ms S]
    torch_peer.py DIR WORKLOAD.json --batch-size B --epochs E [--threads T]

With --batch-size: E timed epochs of shuffled mini-batch SGD instead, the way the PyTorch
tutorials write them: nn.Sequential(Linear, activation, Linear), nn.CrossEntropyLoss,
torch.randperm each epoch and indexing X[idx], y[idx] per batch, after a warm-up of K batches.

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
    mb = {"--batch-size": 0, "--epochs": 1}
    ddir, files, steps, warmup, threads = common.args(sys.argv, mb)
    if threads > 0:
        torch.set_num_threads(threads)
    for wpath in files:
        if mb["--batch-size"] > 0:
            minibatch(wpath, ddir, mb["--batch-size"], mb["--epochs"], warmup)
        else:
            run(wpath, ddir, common.steps_of(wpath, steps), warmup)


def minibatch(wpath, ddir, batch, epochs, warmup):
    w = common.load(wpath, ddir)
    if w["acts"][-1] != "softmax" or len(w["layers"]) != 2:
        raise SystemExit("torch peer: mini-batch epochs are benchmarked on one-hidden-layer softmax MLPs")
    torch.set_default_dtype(torch.float64)
    X = torch.from_numpy(w["X"])
    y = torch.from_numpy(w["Y"][:, 0]).long()
    (W1, b1), (W2, b2) = w["layers"]
    act = {"relu": torch.nn.ReLU(), "sigmoid": torch.nn.Sigmoid(), "tanh": torch.nn.Tanh()}[w["acts"][0]]
    net = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0]), act,
                              torch.nn.Linear(W2.shape[1], W2.shape[0])).double()
    with torch.no_grad():
        for lin, (W, b) in ((net[0], (W1, b1)), (net[2], (W2, b2))):
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(net.parameters(), lr=w["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    m = X.shape[0]
    torch.manual_seed(0)
    with torch.no_grad():
        loss0 = float(loss_fn(net(X), y))

    def batches(perm, n):
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()

    batches(torch.randperm(m), min(m, warmup * batch))
    common.settle(lambda: batches(torch.randperm(m), min(m, warmup * batch)))
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter_ns()
        batches(torch.randperm(m), m)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    with torch.no_grad():
        loss_after = float(loss_fn(net(X), y))
    common.emit({"runner": "torch", "workload": w["name"], "batch_size": batch, "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "loss0": loss0, "loss_after": loss_after,
                 "epoch_ms": [round(t, 3) for t in times], "threadpools": common.threadpools()})


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
    kept = [p.detach().clone() for p in params]

    def restore():
        with torch.no_grad():
            for p, k in zip(params, kept):
                p.copy_(k)
    common.settle(step, restore)
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
