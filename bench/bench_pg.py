"""bench/bench_pg.py -- the PostgreSQL figures of scripts/bench (bench/README.md, "PostgreSQL"):

- train calls: W1 and W3 trained over HTTP by a neurond on PostgreSQL and by the main run's
  neurond on SQLite, call for call alternately;
- jobs: short asynchronous jobs per second on one replica and on three replicas sharing one
  PostgreSQL database, through the HTTP API only (POST /train {"async":true}, GET /v1/jobs/{id}).

scripts/bench runs bench.py under tests/pg/with_postgres.sh with NEUROND_TEST_PG_FSYNC=on:
NEUROND_TEST_PG is then the address of a throwaway cluster that flushes every commit to disk, as
SQLite does. Every daemon here gets a database of its own in it, made with psql. Without
NEUROND_TEST_PG nothing here runs and the report says so.
"""
import collections
import glob
import http.client
import json
import os
import random
import resource
import shutil
import statistics
import struct
import subprocess
import threading
import time
import urllib.parse

from harness import HarnessError, fmt_time_us, log, start_neurond, store_workload, timed_train_call

TRAIN_WORKLOADS = ("W1", "W3")
TRAIN_REPS = 4            # train calls per backend, workload and round, alternating backends
TRAIN_TARGET = 1.2        # PostgreSQL ÷ SQLite wall-clock of one train call
REPLICAS = 3
JOB_CLIENTS = 3           # client threads, the same number for one replica and for three
JOB_STEPS = 5             # each job: a few full-batch steps of a tiny model
JOB_ROWS = 64
JOB_INPUTS = 8
JOBS = {False: 500, True: 6}   # jobs per measurement: full run, smoke
JOB_ROUNDS = 5            # at least, in a full run: each measurement lasts only a second or two
POLL_S = 0.01             # a client's pause between two reads of an unfinished job
RETRY_S = 0.002           # a client's pause before submitting again after a 429
SAMPLE_S = 0.02           # between two samples of what the database's sessions wait for


def admin_address():
    """The throwaway cluster's address (tests/pg/with_postgres.sh), or None."""
    return os.environ.get("NEUROND_TEST_PG") or None


def psql_argv(admin):
    """psql, unaligned and quiet, connected to `admin` as the cluster's admin user."""
    exe = shutil.which("psql") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1:]), None)
    if exe is None:
        raise HarnessError("psql not found (Debian package postgresql-client)")
    return [exe, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin]


def psql(admin, sql):
    """Run one SQL command; its unaligned output."""
    p = subprocess.run(psql_argv(admin) + ["-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        raise HarnessError("psql %r failed: %s" % (sql, p.stderr.strip()[-500:]))
    return p.stdout.strip()


def new_database(admin, name):
    """A new, empty database NAME in the cluster; its postgresql:// address."""
    psql(admin, 'CREATE DATABASE "%s"' % name)
    u = urllib.parse.urlsplit(admin)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


def server_settings(admin):
    """What decides how PostgreSQL commits, as the server reports it."""
    keys = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")
    out = psql(admin, "SELECT " + ", ".join("current_setting('%s')" % k for k in keys))
    return dict(zip(keys, out.split("|")))


# ------------------------------------------------------------------ train calls, PG vs SQLite

def run_train(neurond, W, sqlite_daemon, lib_loss0, workdir, daemons, rounds, smoke, warmup):
    """W1 and W3 stored in a PostgreSQL neurond as in the SQLite one, then per round and
    workload TRAIN_REPS train calls on each, alternating which goes first."""
    admin = admin_address()
    pg = start_neurond(neurond, new_database(admin, "bench_train"), "neurond-pg-train", workdir)
    daemons.append(pg)
    out = {"reps": 1 if smoke else TRAIN_REPS, "warmup": warmup, "workloads": {}}
    ws = [w for w in W if w["name"] in TRAIN_WORKLOADS]
    for w in ws:
        model_id, ingest_s = store_workload(pg.port, w, workdir)
        out["workloads"][w["name"]] = {"pg_model_id": model_id, "ingest_s": ingest_s, "bytes": w["gen"]["bytes"],
                                       "steps": w["steps"], "sqlite": [], "postgresql": []}
    log("PostgreSQL daemon on port %d holds %s; settled in %.1f s" % (
        pg.port, ", ".join(TRAIN_WORKLOADS), pg.settle()))
    settle_cluster(admin)
    for rnd in range(rounds):
        log("PostgreSQL vs SQLite train calls, round %d/%d" % (rnd + 1, rounds))
        for w in ws:
            cell = out["workloads"][w["name"]]
            for rep in range(out["reps"]):
                sides = [("sqlite", sqlite_daemon.port, w["model_id"]), ("postgresql", pg.port, cell["pg_model_id"])]
                if (rnd * out["reps"] + rep) % 2:
                    sides.reverse()
                for backend, port, model_id in sides:
                    cell[backend].append(timed_train_call(port, model_id, w, warmup, backend))
    # The PostgreSQL model started from θ0: its first call must see libneuron's loss there.
    for w in ws:
        first = out["workloads"][w["name"]]["postgresql"][0]["loss_before"]
        ref = lib_loss0[w["name"]]
        if abs(first - ref) > 1e-6 * max(abs(ref), 1e-300):
            raise HarnessError("%s on PostgreSQL: loss_before %.17g but libneuron's loss at θ0 is %.17g" %
                               (w["name"], first, ref))
    if not pg.alive():
        raise HarnessError("the PostgreSQL neurond died (log: %s)" % pg.log.name)
    pg.stop()
    daemons.remove(pg)
    settle_cluster(admin)
    return out


def settle_cluster(admin):
    """A checkpoint now: the pages this part dirtied are written before the measurements that
    follow, not by a timed checkpoint in the middle of one."""
    psql(admin, "CHECKPOINT")


# ------------------------------------------------------------------ short jobs per second

class Client:
    """Requests on one keep-alive connection to a daemon, reopened when the daemon closed it."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def request(self, method, path, body=None, ctype="application/json"):
        """(status, parsed JSON answer); `body` is JSON-encoded unless it is bytes. A request on
        a reused connection that the daemon had closed meanwhile is sent once more on a new
        one; any other failure is a harness error."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": ctype} if data is not None else {}
        for attempt in (0, 1):
            reused = self.conn is not None
            if not reused:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and attempt == 0:
                    continue
                raise HarnessError("%s %s on port %d: %s" % (method, path, self.port, e))
            if r.will_close:
                self.close()
            return r.status, json.loads(raw) if raw else None

    def ok(self, method, path, body=None, ctype="application/json"):
        """request(), for an answer that must be 2xx: its parsed body."""
        st, ans = self.request(method, path, body, ctype)
        if st // 100 != 2:
            raise HarnessError("%s %s answered %d: %s" % (method, path, st, str(ans)[:500]))
        return ans

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def in_client_threads(ds, work):
    """work(k, clients) in JOB_CLIENTS threads at once, k = 0.., each with keep-alive clients of
    its own for the replicas ds (by index); the first exception of any is raised once all ended."""
    failures = []

    def one(k):
        clients = {r: Client(d.port) for r, d in enumerate(ds)}
        try:
            work(k, clients)
        except Exception as e:   # raised below, once every thread has ended
            failures.append(e)
        finally:
            for c in clients.values():
                c.close()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(JOB_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def job_model(i):
    """The i-th job's model: logistic regression on JOB_INPUTS inputs."""
    return {"name": "bench-job-%d" % i, "kind": "logistic", "inputs": JOB_INPUTS, "loss": "bce",
            "reduction": "mean", "init": {"method": "uniform", "scale": 0.01, "seed": i + 1},
            "optimizer": {"method": "sgd", "learning_rate": 0.5}}


def job_rows(i):
    """JOB_ROWS rows for the i-th model as raw float64: features uniform in [-1, 1), a 0/1
    label from a fixed linear teacher."""
    rng = random.Random(1000 + i)
    teacher = [((k % 3) - 1) * 0.8 for k in range(JOB_INPUTS)]
    vals = []
    for _ in range(JOB_ROWS):
        x = [rng.uniform(-1, 1) for _ in range(JOB_INPUTS)]
        vals += x + [1.0 if sum(a * b for a, b in zip(teacher, x)) > 0 else 0.0]
    return struct.pack("<%dd" % len(vals), *vals)


def cpu_seconds_of(comm):
    """User + system CPU seconds of the live processes named `comm` (/proc/PID/stat), by pid."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        if name == comm:
            fields = text.rsplit(")", 1)[1].split()
            out[path] = (int(fields[11]) + int(fields[12])) / tick
    return out


def client_jobs(clients, assigned, steps, finished, retries):
    """One client thread: submit its jobs in order, then wait for each in the order submitted.
    A 429 (the replica runs as many jobs as it takes, or the queue is full) is tried again
    RETRY_S later, and counted."""
    outstanding = collections.deque()
    for model_id, replica in assigned:
        while True:
            st, ans = clients[replica].request("POST", "/v1/models/%d/train" % model_id,
                                               {"steps": steps, "async": True})
            if st == 202:
                outstanding.append((ans["id"], replica))
                break
            if st != 429:
                raise HarnessError("POST /v1/models/%d/train async answered %d: %s" % (model_id, st, ans))
            retries.append(1)
            time.sleep(RETRY_S)
    while outstanding:
        finished.append(wait_job(clients, outstanding.popleft(), steps))


def wait_job(clients, job, steps):
    """Read a job on the replica it was submitted to until it ends; the finished job object,
    with the moment the client saw it end."""
    job_id, replica = job
    while True:
        st, ans = clients[replica].request("GET", "/v1/jobs/%d" % job_id)
        if st != 200:
            raise HarnessError("GET /v1/jobs/%d answered %d: %s" % (job_id, st, ans))
        if ans["status"] not in ("queued", "running"):
            break
        time.sleep(POLL_S)
    if ans["status"] != "succeeded" or (ans.get("result") or {}).get("steps_run") != steps:
        raise HarnessError("job %d ended %s: %s" % (job_id, ans["status"], json.dumps(ans)[:500]))
    ans["seen_at"] = time.perf_counter()
    return ans


def start_replicas(neurond, db, replicas, name, workdir, daemons):
    ds = []
    for i in range(replicas):
        ds.append(start_neurond(neurond, db, "%s-%d" % (name, i), workdir))
        daemons.append(ds[-1])
    return ds


def stop_replicas(ds, daemons):
    for d in ds:
        if not d.alive():
            raise HarnessError("a replica died (log: %s)" % d.log.name)
        d.stop()
        daemons.remove(d)


SESSION_STATES = ("writer lock", "WAL flush", "in a transaction, waiting for neurond", "running a statement")


class WaitSampler:
    """What the sessions of one database are doing, sampled from pg_stat_activity every
    SAMPLE_S by one psql session in a thread of its own, while a measurement runs: the mean
    number of sessions in each state. A session inside a transaction waits for the writer lock
    (an advisory lock), for a WAL flush, for neurond's next statement, or runs one."""

    QUERY = ("SELECT CASE WHEN wait_event = 'advisory' THEN '%s' "
             "WHEN wait_event IN ('WALSync', 'WALWrite', 'WALInsert') THEN '%s' "
             "WHEN state = 'idle in transaction' THEN '%s' "
             "WHEN state = 'active' AND wait_event IS NULL THEN '%s' "
             "ELSE coalesce(wait_event_type || ':' || wait_event, state) END, count(*) " % SESSION_STATES +
             "FROM pg_stat_activity WHERE datname = '%s' AND pid <> pg_backend_pid() "
             "AND state NOT IN ('idle') GROUP BY 1;\\echo __end__\n")

    def __init__(self, admin, database):
        self.p = subprocess.Popen(psql_argv(admin), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.query = self.QUERY % database
        self.counts = collections.Counter()
        self.samples = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        try:
            while not self.stopping.is_set():
                self.p.stdin.write(self.query)
                for line in iter(self.p.stdout.readline, ""):
                    if line.strip() == "__end__":
                        break
                    what, _, n = line.strip().rpartition("|")
                    if what:
                        self.counts[what] += int(n)
                else:
                    return   # psql ended: the samples so far stand
                self.samples += 1
                time.sleep(SAMPLE_S)
        except (OSError, ValueError):
            return

    def stop(self):
        """{state: mean sessions in it} over the samples taken."""
        self.stopping.set()
        self.thread.join()
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=30)
        return {k: v / self.samples for k, v in sorted(self.counts.items())} if self.samples else {}


def wal_flushes(admin):
    """(WAL flushes to disk, milliseconds spent in them) of the whole cluster so far
    (pg_stat_wal; the time needs track_wal_io_timing, which run_jobs turns on)."""
    n, ms = psql(admin, "SELECT wal_sync, wal_sync_time FROM pg_stat_wal").split("|")
    return int(n), float(ms)


def run_job_phase(neurond, workdir, daemons, replicas, n_jobs, tag):
    """n_jobs one-model jobs through `replicas` neurond sharing a fresh database: models and rows
    stored first (untimed), then the clock runs from the first submission until every job has
    been seen finished."""
    admin = admin_address()
    db_name = "bench_jobs_%s" % tag
    db = new_database(admin, db_name)
    ds = start_replicas(neurond, db, replicas, "neurond-pg-jobs-%s-setup" % tag, workdir, daemons)
    models = [None] * n_jobs

    def store(k, clients):
        for i in range(k, n_jobs, JOB_CLIENTS):
            c = clients[i % replicas]
            models[i] = c.ok("POST", "/v1/models", job_model(i))["id"]
            c.ok("POST", "/v1/models/%d/batches?rows=%d&cols=%d" % (models[i], JOB_ROWS, JOB_INPUTS + 1),
                 job_rows(i), "application/octet-stream")
    in_client_threads(ds, store)
    # The replicas that stored the models stop (their PostgreSQL sessions end and report their
    # statistics), so the WAL counts below hold the jobs' work alone; a checkpoint writes the
    # stored pages out now rather than during the jobs; fresh replicas run the jobs. (Not
    # Daemon.settle(): it waits for the whole machine's writeback, which other work on a shared
    # machine can hold above its threshold for minutes.)
    stop_replicas(ds, daemons)
    settle_cluster(admin)
    ds = start_replicas(neurond, db, replicas, "neurond-pg-jobs-%s" % tag, workdir, daemons)
    # Job i goes to replica i mod replicas and belongs to client i mod JOB_CLIENTS: with three
    # replicas each client talks to one of them, with one all three share it.
    work = [[] for _ in range(JOB_CLIENTS)]
    for i, model_id in enumerate(models):
        work[i % JOB_CLIENTS].append((model_id, i % replicas))
    finished, retries = [], []
    wal0 = wal_flushes(admin)
    pg0, nd0 = cpu_seconds_of("postgres"), [d.cpu_seconds() for d in ds]
    sampler = WaitSampler(admin, db_name)
    us0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        in_client_threads(ds, lambda k, clients: client_jobs(clients, work[k], JOB_STEPS, finished, retries))
    finally:
        waits = sampler.stop()
    wall = max((j["seen_at"] for j in finished), default=t0) - t0
    us1 = resource.getrusage(resource.RUSAGE_SELF)
    pg1, nd1 = cpu_seconds_of("postgres"), [d.cpu_seconds() for d in ds]
    if len(finished) != n_jobs:
        raise HarnessError("%d of %d jobs finished" % (len(finished), n_jobs))
    stop_replicas(ds, daemons)
    wal1 = wal_flushes(admin)
    per_replica = collections.Counter(str(j.get("replica")) for j in finished)
    out = {"replicas": replicas, "jobs": n_jobs, "wall_s": wall, "jobs_per_s": n_jobs / wall,
           "cpu_neurond_s": sum(nd1) - sum(nd0),
           # backends that ended during the phase take their CPU time with them: at least this
           "cpu_postgres_s": sum(v - pg0.get(k, 0.0) for k, v in pg1.items()),
           "cpu_client_s": (us1.ru_utime + us1.ru_stime) - (us0.ru_utime + us0.ru_stime),
           # the replicas' heartbeats and their stopping are in these too: a few flushes
           "wal_flushes": wal1[0] - wal0[0], "wal_flush_ms": wal1[1] - wal0[1],
           "jobs_per_replica": dict(sorted(per_replica.items())), "retried_429": len(retries),
           "sessions": waits}
    log("  %d replica(s): %d jobs in %.2f s = %.1f jobs/s (run by replica: %s; 429s: %d; WAL flushes: %d, "
        "%.0f ms; sessions: %s)" % (replicas, n_jobs, wall, out["jobs_per_s"], out["jobs_per_replica"], len(retries),
                                    out["wal_flushes"], out["wal_flush_ms"],
                                    ", ".join("%s %.2f" % kv for kv in waits.items())))
    return out


def run_jobs(neurond, workdir, daemons, rounds, smoke):
    """One replica and REPLICAS replicas on PostgreSQL, alternating which goes first each round
    (at least JOB_ROUNDS rounds in a full run)."""
    if not smoke:
        rounds = max(rounds, JOB_ROUNDS)
    out = {"steps": JOB_STEPS, "rows": JOB_ROWS, "inputs": JOB_INPUTS, "clients": JOB_CLIENTS,
           "poll_s": POLL_S, "sample_s": SAMPLE_S, "runs": {"1": [], str(REPLICAS): []}}
    admin = admin_address()
    psql(admin, "ALTER SYSTEM SET track_wal_io_timing = on")   # the time in wal_flushes()
    psql(admin, "SELECT pg_reload_conf()")
    for rnd in range(rounds):
        log("short jobs on PostgreSQL, round %d/%d" % (rnd + 1, rounds))
        order = (1, REPLICAS) if rnd % 2 == 0 else (REPLICAS, 1)
        for k in order:
            out["runs"][str(k)].append(run_job_phase(neurond, workdir, daemons, k, JOBS[smoke],
                                                     "r%d_%d" % (rnd, k)))
    settle_cluster(admin)
    return out


# ------------------------------------------------------------------ the report

def render(P, targets):
    """The report's PostgreSQL section (lines) from R["pg"]; appends its targets."""
    L = ["## PostgreSQL", ""]
    train_names = ["%s train call over HTTP on PostgreSQL ≤ %s× the same on SQLite" % (n, TRAIN_TARGET)
                   for n in TRAIN_WORKLOADS]
    jobs_name = "short async jobs/s, %d replicas on one PostgreSQL database ÷ 1 replica (reported)" % REPLICAS
    if not P or not P.get("settings"):
        reason = (P or {}).get("skipped", "not run")
        L += ["Not measured: %s." % reason, ""]
        for name in train_names + [jobs_name]:
            targets.append((name, "not measured", None))
        return L
    s = P["settings"]
    L.append("PostgreSQL %s, a throwaway cluster on this machine (tests/pg/with_postgres.sh), loopback TCP: "
             "`fsync` %s, `synchronous_commit` %s, `wal_sync_method` %s, `full_page_writes` %s. SQLite: WAL with "
             "`synchronous=FULL`, as the daemon sets it. Both wait for the disk at every commit except the flip of a "
             "model's status to `training` and, on SQLite alone, a train call's lease take: a train call waits for "
             "one flush on SQLite and two on PostgreSQL (docs/operations.md, Database files)." % (
                 s["server_version"], s["fsync"], s["synchronous_commit"], s["wal_sync_method"], s["full_page_writes"]))
    L.append("")
    tr = P.get("train")
    if tr:
        L.append("### W1, W3 train calls: PostgreSQL vs SQLite")
        L.append("")
        L.append("Per round and workload, %d train call(s) on each backend, alternating which goes first, each "
                 "after a warm-up call of %d steps as in *HTTP vs library* above; the same data, stored the same "
                 "way. Wall-clock median (all calls, ms)." % (tr["reps"], tr["warmup"]))
        L.append("")
        L.append("| workload | N | SQLite | PostgreSQL | PostgreSQL ÷ SQLite | median of the pairs' ratios | "
                 "`elapsed_ms` SQLite / PostgreSQL | ingest into PostgreSQL |")
        L.append("|---|---|---|---|---|---|---|---|")
        for name in TRAIN_WORKLOADS:
            c = tr["workloads"][name]
            med = {b: statistics.median(x["wall_ms"] for x in c[b]) for b in ("sqlite", "postgresql")}
            el = {b: statistics.median(x["elapsed_ms"] for x in c[b]) for b in ("sqlite", "postgresql")}
            ratio = med["postgresql"] / med["sqlite"]
            # The two calls of a pair ran back to back: their ratio is the least touched by
            # other work on the machine drifting between pairs.
            paired = statistics.median(p["wall_ms"] / q["wall_ms"] for p, q in zip(c["postgresql"], c["sqlite"]))
            L.append("| %s | %d | %s (%s) | %s (%s) | %.2f× | %.2f× | %s / %s | %.0f MB in %.2f s (%.0f MB/s) |" % (
                name, c["steps"],
                fmt_time_us(med["sqlite"] * 1e3), ", ".join("%.3g" % x["wall_ms"] for x in c["sqlite"]),
                fmt_time_us(med["postgresql"] * 1e3), ", ".join("%.3g" % x["wall_ms"] for x in c["postgresql"]),
                ratio, paired, fmt_time_us(el["sqlite"] * 1e3), fmt_time_us(el["postgresql"] * 1e3),
                c["bytes"] / 1e6, c["ingest_s"], c["bytes"] / 1e6 / c["ingest_s"] if c["ingest_s"] else 0))
            targets.append((train_names[TRAIN_WORKLOADS.index(name)], "%.2f×" % ratio, ratio <= TRAIN_TARGET))
        L.append("")
    jb = P.get("jobs")
    if jb:
        L.append("### Short async jobs per second: 1 replica vs %d sharing one database" % REPLICAS)
        L.append("")
        L.append("Each job trains its own model (logistic, %d inputs, %d stored rows) for %d full-batch steps "
                 "(`POST /train {\"steps\":%d,\"async\":true}`, history every step). %d client threads submit "
                 "the jobs, spread evenly over the replicas, then read each job (`GET /v1/jobs/{id}`, every %d ms) "
                 "until it has ended; jobs/s = jobs ÷ the time from the first submission until the last job "
                 "was seen finished. Fresh database and replicas for every measurement, default flags "
                 "(`--max-jobs` = cores per replica); the configurations alternate which goes first each round. "
                 "CPU: seconds used during the measurement by the replicas, by the PostgreSQL server's "
                 "processes (at least: a backend that ended took its share with it) and by the client. WAL "
                 "flushes: the cluster's `wal_sync` and `wal_sync_time` (pg_stat_wal) over the measurement; "
                 "flushing is serialised, so a time near 100%% of the wall-clock means the jobs queue "
                 "for the disk. Sessions: the database's sessions in `pg_stat_activity`, sampled every %d ms, "
                 "mean number waiting for the writer lock (the advisory lock every write transaction of "
                 "neurond takes first), waiting for a WAL flush, inside a transaction waiting for neurond's next "
                 "statement, and running one." % (
                     jb["inputs"], jb["rows"], jb["steps"], jb["steps"], jb["clients"], jb["poll_s"] * 1e3,
                     jb["sample_s"] * 1e3))
        L.append("")
        L.append("| replicas | jobs | jobs/s (median; all) | wall-clock | CPU neurond / PostgreSQL / client | "
                 "cores busy (CPU ÷ wall) | WAL flushes per job | time flushing the WAL ÷ wall | "
                 "sessions (median of the runs' means): %s | 429s retried | jobs run by each replica |" %
                 " / ".join(SESSION_STATES))
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        med = {}
        for k, runs in jb["runs"].items():
            med[k] = statistics.median(r["jobs_per_s"] for r in runs)
            each = lambda fmt, f: ", ".join(fmt % f(r) for r in runs)
            L.append("| %s | %d | %.1f (%s) | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                k, runs[0]["jobs"], med[k], each("%.1f", lambda r: r["jobs_per_s"]),
                each("%.2f s", lambda r: r["wall_s"]),
                each("%.2f / %.2f / %.2f s", lambda r: (r["cpu_neurond_s"], r["cpu_postgres_s"], r["cpu_client_s"])),
                each("%.2f", lambda r: (r["cpu_neurond_s"] + r["cpu_postgres_s"] + r["cpu_client_s"]) / r["wall_s"]),
                each("%.1f", lambda r: r["wal_flushes"] / r["jobs"]),
                each("%.0f%%", lambda r: 100 * r["wal_flush_ms"] / 1e3 / r["wall_s"]),
                " / ".join("%.2f" % statistics.median(r["sessions"].get(state, 0.0) for r in runs)
                           for state in SESSION_STATES),
                each("%d", lambda r: r["retried_429"]),
                "; ".join(" ".join("#%s: %d" % kv for kv in r["jobs_per_replica"].items()) for r in runs)))
        ratio = med[str(REPLICAS)] / med["1"]
        # The two measurements of a round ran back to back: their ratio is the least touched by
        # the machine's load drifting between rounds.
        rounds = [a["jobs_per_s"] / b["jobs_per_s"] for a, b in zip(jb["runs"][str(REPLICAS)], jb["runs"]["1"])]
        L.append("")
        L.append("%d replicas ÷ 1 replica: **%.2f×** the medians; %.2f× the median of the rounds' own ratios (%s). "
                 "The replicas share the machine's %s cores and one database: the sessions show where the jobs "
                 "wait (bench/README.md, PostgreSQL)." % (
                     REPLICAS, ratio, statistics.median(rounds), ", ".join("%.2f" % r for r in rounds),
                     P.get("cores", "?")))
        L.append("")
        targets.append((jobs_name, "%.2f× (%.1f vs %.1f jobs/s; by round %.2f×)" % (
            ratio, med[str(REPLICAS)], med["1"], statistics.median(rounds)), None))
    return L
