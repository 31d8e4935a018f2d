#!/usr/bin/env python3
"""Every flag of neurond is one row of its flag table, and that row drives the command line, the
environment variable, the default and --help. Checked from outside:

- `neurond --help` lists each flag once with its variable NEUROND_<NAME> (dashes as underscores)
  and a default, and docs/operations.md's flag table lists exactly the same flags and variables;
- each variable is read: set to an empty value (invalid for every kind of flag) it stops the
  start with exit 2 and a message naming the flag and the variable;
- the command line wins over the environment, even over an invalid value there.

Usage: check_flags.py NEUROND SOURCE_DIR
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HELP_LINE = re.compile(r"^  --([a-z][a-z-]*)\s+(NEUROND_[A-Z_]+)\s+(.+) \(default: (.+)\)$")
DOC_ROW = re.compile(r"^\| `--([a-z][a-z-]*)[^`]*` \| `(NEUROND_[A-Z_]+)` \|")

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def main():
    neurond, src = sys.argv[1], sys.argv[2]
    out = subprocess.run([neurond, "--help"], capture_output=True, text=True, timeout=10)
    check(out.returncode == 0, f"--help exited {out.returncode}")
    help_flags = {}
    for line in out.stdout.splitlines():
        m = HELP_LINE.match(line)
        if m:
            check(m.group(1) not in help_flags, f"--help lists --{m.group(1)} twice")
            help_flags[m.group(1)] = m.group(2)
    check(len(help_flags) >= 20, f"--help lists only {len(help_flags)} flags")
    for name, env in help_flags.items():
        want = "NEUROND_" + name.upper().replace("-", "_")
        check(env == want, f"--{name}: variable {env}, expected {want}")

    doc_flags = {}
    with open(os.path.join(src, "docs", "operations.md"), encoding="utf-8") as f:
        for line in f:
            m = DOC_ROW.match(line)
            if m:
                doc_flags[m.group(1)] = m.group(2)
    for name in sorted(set(help_flags) - set(doc_flags)):
        check(False, f"--{name} is in --help but not in docs/operations.md's flag table")
    for name in sorted(set(doc_flags) - set(help_flags)):
        check(False, f"--{name} is in docs/operations.md but neurond does not know it")
    for name in sorted(set(help_flags) & set(doc_flags)):
        check(help_flags[name] == doc_flags[name],
              f"--{name}: docs say {doc_flags[name]}, --help says {help_flags[name]}")

    with tempfile.TemporaryDirectory(prefix="neurond-flags-") as tmp:
        db = os.path.join(tmp, "t.db")
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("NEUROND_")}
        for name, var in sorted(help_flags.items()):
            env = dict(base_env, **{var: ""})
            args = [neurond, "--db", db] if name != "db" else [neurond]
            if name != "port":
                args += ["--port", "0"]
            try:
                r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=10)
            except subprocess.TimeoutExpired:
                check(False, f"{var}='' was ignored: neurond started")
                continue
            check(r.returncode == 2 and f"--{name}" in r.stderr and var in r.stderr,
                  f"{var}='': exit {r.returncode}, stderr {r.stderr.strip()!r}")

        # The command line wins, even over an invalid variable.
        env = dict(base_env, NEUROND_MAX_DEPTH="not a number", NEUROND_PORT="99999")
        p = subprocess.Popen([neurond, "--db", db, "--port", "0", "--max-depth", "5"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = ""
        deadline = time.time() + 10
        while time.time() < deadline and "listening on" not in line:
            line = p.stdout.readline()
            if line == "" and p.poll() is not None:
                break
        check("listening on" in line,
              "an invalid NEUROND_MAX_DEPTH / NEUROND_PORT stopped a start whose command line "
              f"sets both: {p.stderr.read() if p.poll() is not None else line!r}")
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            check(p.wait(timeout=10) == 0, "neurond did not stop cleanly")

    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print(f"{len(help_flags)} flags: --help, NEUROND_* variables and docs/operations.md agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
