"""bench/harness.py -- what every measurement of scripts/bench shares: the harness error,
the log, daemons on a free loopback port and requests to them, the statistics and the
formatting of the report (bench/README.md).

Python standard library only, like bench.py.
"""
import http.client
import json
import os
import re
import subprocess
import sys
import time


class HarnessError(Exception):
    pass


# Every runner keeps working, untimed, this long between its warm-up and its timed steps: on a
# virtual machine the first tenths of a second after a process has touched a hundred megabytes
# of fresh memory run slower, and so do those after it sat idle (bench_lib.c's bench_settle has
# the figures). 0 in smoke runs.
SETTLE_S = 0.5


def settle(work):
    """work() again and again, untimed, until SETTLE_S have passed."""
    end = time.perf_counter() + SETTLE_S
    while SETTLE_S > 0 and time.perf_counter() < end:
        work()


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


# ------------------------------------------------------------------ statistics and formatting

def quantile(xs, q):
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(xs):
    return {"median": quantile(xs, 0.5), "p10": quantile(xs, 0.1), "p90": quantile(xs, 0.9), "n": len(xs)}


def fmt_time_us(us):
    if us != us:
        return "—"
    if us >= 1e6:
        return "%.3g s" % (us / 1e6)
    if us >= 1e3:
        return "%.3g ms" % (us / 1e3)
    return "%.3g µs" % us


def fmt_spread(s):
    return "%s (%s–%s)" % (fmt_time_us(s["median"]), fmt_time_us(s["p10"]), fmt_time_us(s["p90"]))


def mark(ok):
    if ok is None:
        return "n/a"
    return "✓" if ok else "✗"


# ------------------------------------------------------------------ daemons and HTTP

class Daemon:
    """A process printing '... listening on 127.0.0.1:PORT' on stdout, on a free port."""

    def __init__(self, argv, name, logdir):
        self.name = name
        self.log = open(os.path.join(logdir, name + ".log"), "ab")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        self.port = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.p.stdout.readline().decode(errors="replace")
            if not line:
                break
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.stop()
            raise HarnessError("%s did not start (log: %s)" % (name, self.log.name))

    def alive(self):
        return self.p.poll() is None

    def status(self, key):
        """A /proc/PID/status field in kB (VmHWM, VmRSS)."""
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise HarnessError("no %s in /proc/%d/status" % (key, self.p.pid))

    def cpu_seconds(self):
        """User + system CPU time of the process so far (/proc/PID/stat)."""
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self, limit_s=120):
        """Wait until the daemon's background work after an ingest is done: its WAL checkpoint
        (copying the new pages into the database file) and the kernel's writeback of them,
        which would otherwise share the cores and the disk with the first timed round.
        Quiet = under 2 % of a core over 0.5 s and under 64 MB dirty or in writeback."""
        t0 = time.monotonic()
        last = self.cpu_seconds()
        while time.monotonic() - t0 < limit_s:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - last < 0.01 and writeback_pending() < (64 << 20):
                return time.monotonic() - t0
            last = now
        return time.monotonic() - t0

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self.p.stdout:
            self.p.stdout.close()
        self.log.close()


def writeback_pending():
    """Bytes the kernel still has to write to disk (Dirty + Writeback of /proc/meminfo)."""
    pending = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(("Dirty:", "Writeback:")):
                pending += int(line.split()[1]) * 1024
    return pending


def wait_writeback(limit_s=60):
    """Wait until under 64 MB is left to write back: an ingest timed while the previous one's
    pages are still being written shares the disk with them. Returns the seconds waited."""
    t0 = time.monotonic()
    while writeback_pending() >= (64 << 20) and time.monotonic() - t0 < limit_s:
        time.sleep(0.2)
    return time.monotonic() - t0


def http_req(port, method, path, body=None, ctype="application/json", timeout=600):
    """One request on a fresh connection. Returns (status, parsed JSON or text, seconds from
    sending the request line to having read the whole answer)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.connect()
    headers = {"Content-Type": ctype} if body is not None else {}
    t0 = time.perf_counter()
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    secs = time.perf_counter() - t0
    c.close()
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data.decode(errors="replace")
    return r.status, parsed, secs


def api(port, method, path, body=None, ctype="application/json", timeout=600):
    st, parsed, secs = http_req(port, method, path, body, ctype, timeout)
    if st // 100 != 2:
        raise HarnessError("%s %s answered %d: %s" % (method, path, st, str(parsed)[:500]))
    return parsed, secs


def start_neurond(neurond, db, name, workdir, extra=()):
    """neurond on a free loopback port with the database `db` (a file or a postgresql:// address);
    its log is WORKDIR/NAME.log."""
    return Daemon([neurond, "--bind", "127.0.0.1", "--port", "0", "--db", db] + list(extra), name, workdir)


def store_workload(port, w, workdir, chunk=32 << 20):
    """A model with the workload's spec, its rows (WORKDIR/<W>.data, from `bench_lib gen`) stored
    as raw float64 batches of at most `chunk` bytes. Returns (model id, seconds the batch
    requests took)."""
    model, _ = api(port, "POST", "/v1/models", dict(w["spec"]))
    g = w["gen"]
    cols = g["n_x"] + g["n_y"]
    row_bytes = cols * 8
    per = max(1, chunk // row_bytes)
    ingest_s = 0.0
    with open(os.path.join(workdir, w["name"] + ".data"), "rb") as f:
        left = g["rows"]
        while left > 0:
            n = min(per, left)
            body = f.read(n * row_bytes)
            ans, secs = api(port, "POST", "/v1/models/%d/batches?rows=%d&cols=%d" % (model["id"], n, cols),
                            body, "application/octet-stream")
            ingest_s += secs
            left -= n
    if ans["total_rows"] != g["rows"]:
        raise HarnessError("%s: daemon holds %d rows, expected %d" % (w["name"], ans["total_rows"], g["rows"]))
    return model["id"], ingest_s


def timed_train_call(port, model_id, w, warmup, label="http"):
    """A warm-up call of `warmup` steps (the rows loaded into the data cache, the training state
    built, as the library runs warm-up steps before its timed call), untimed calls of N steps for
    the settling time every runner takes, then one timed train call of the workload's N steps
    with no history rows (the library call records none)."""
    steps = w["steps"]
    url = "/v1/models/%d/train" % model_id
    warm, _ = api(port, "POST", url, {"steps": warmup, "history_every": 0})
    # Busy, not a pause: the daemon sits idle while the other runners work, and after a pause
    # its W1 calls took 36 ms for 10 steps for a quarter of a second, then 20 ms. The last untimed
    # call ends right before the timed one, as the library's per-step call does.
    settle(lambda: api(port, "POST", url, {"steps": steps, "history_every": 0}))
    ans, secs = api(port, "POST", url, {"steps": steps, "history_every": 0})
    if ans["steps_run"] != steps:
        raise HarnessError("%s %s train ran %s of %d steps (%s)" % (w["name"], label, ans["steps_run"], steps,
                                                                  ans["stopped"]))
    log("  %-10s train %-8s %d steps                             %.1f s" % (label, w["name"], steps, secs))
    return {"runner": label, "workload": w["name"], "wall_ms": secs * 1e3, "elapsed_ms": ans["elapsed_ms"],
            "loss_before": warm["loss_before"], "steps": steps}
