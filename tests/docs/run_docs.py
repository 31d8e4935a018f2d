#!/usr/bin/env python3
"""tests/docs/run_docs.py -- run a document's curl examples in order against a fresh neurond
and compare what each prints with what the document shows.

    tests/docs/run_docs.py NEUROND DOC.md [--update]

One daemon (fresh database, --port 0) serves the whole document, so the examples form one
session: each runs against the state the examples above it left. Every ```sh block that
contains `curl` is run, top to bottom, as one bash script in a scratch directory (files an
example writes, such as m.json, are there for the next one), with `localhost:8080` and
`127.0.0.1:8080` pointing at the daemon. Other blocks are not run; a block right after the
comment `<!-- docs-check: skip -->` is not run either, and one right after
`<!-- docs-check: alone -->` runs against a daemon of its own with a fresh database (an aside
that must not change the session's state: the ids the examples after it show).

What counts as an example's shown output (how to write one: docs/api.md, "Examples are
tested"):

  - comment lines right after a command inside the sh block (`# {"id":1,...}`): the output of
    that command; a command continues over lines ending in a backslash;
  - else, for the block's last command, a ```json or plain ``` block that directly follows the
    sh block.

A command without a shown output is run but not compared. The comparison is exact, except:

  - numbers agree to 12 significant digits (the last digits of a float can change with the
    BLAS build or the number of threads);
  - `…` or `...` matches any text (also across lines);
  - a timestamp (2026-11-28T04:58:21.607Z) matches any timestamp, and the number after
    "elapsed_ms": matches any number: they change from run to run;
  - when the output is one line, shown comment lines are joined, each without its leading
    whitespace (a long answer may be wrapped over several comment lines);
  - trailing whitespace is ignored.

--update rewrites, in place, every shown output that has no `…`/`...` and does not match
with what the command printed (then review the diff). Exit status: 0 when every shown output
matched, 1 otherwise, 2 on a usage or setup error.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ELLIPSIS = r"…|\.\.\."
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
ELAPSED = r'"elapsed_ms":-?[0-9][0-9.eE+-]*'
VOLATILE = re.compile("(%s)|(%s)|(%s)" % (ELLIPSIS, TIMESTAMP, ELAPSED))
MARK = "\x1e@@docs-step@@\x1e"
SKIP = "<!-- docs-check: skip -->"
ALONE = "<!-- docs-check: alone -->"


class Step:
    """One command of a sh block and the output the document shows for it."""

    def __init__(self, line, command):
        self.line = line           # 1-based line of the command in the document
        self.command = command     # its text (continuation lines included)
        self.shown = None          # list of shown lines, or None
        self.where = None          # ("comment", first, last) or ("fence", first, last): 0-based
        self.output = None         # what it printed


def parse(lines):
    """The runnable blocks of the document: lists of Steps."""
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        body = lines[start + 1:j]
        marker = lines[start - 1].strip() if start > 0 else ""
        skipped = marker == SKIP
        i = j + 1
        if lang != "sh" or skipped or not any("curl" in b for b in body):
            continue
        steps, k = [], 0
        while k < len(body):
            text = body[k]
            if not text.strip() or text.lstrip().startswith("#"):
                k += 1          # a comment with no command above it: prose
                continue
            first, cmd = start + 1 + k, [text]
            while cmd[-1].rstrip().endswith("\\") and k + 1 < len(body):
                k += 1
                cmd.append(body[k])
            k += 1
            step = Step(first + 1, "\n".join(cmd))
            c0 = k
            while k < len(body) and body[k].lstrip().startswith("#"):
                k += 1
            if k > c0:
                step.shown = [re.sub(r"^\s*#( |$)", "", b, count=1) for b in body[c0:k]]
                step.where = ("comment", start + 1 + c0, start + 1 + k - 1)
            steps.append(step)
        # A fence right after the block shows the last command's output.
        if steps and steps[-1].shown is None and i < len(lines):
            m2 = re.match(r"^```(json|)\s*$", lines[i])
            if m2:
                j = i + 1
                while j < len(lines) and lines[j].rstrip() != "```":
                    j += 1
                steps[-1].shown = lines[i + 1:j]
                steps[-1].where = ("fence", i + 1, j - 1)
                i = j + 1
        blocks.append((steps, marker == ALONE))
    return blocks


NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"


def pattern_of(shown):
    """A regex for the shown text, and the numbers it shows (one capture group each)."""
    parts, numbers, pos = [], [], 0

    def literal(text):
        at = 0
        for m in re.finditer(NUMBER, text):
            parts.append(re.escape(text[at:m.start()]))
            parts.append("(%s)" % NUMBER)
            numbers.append(m.group(0))
            at = m.end()
        parts.append(re.escape(text[at:]))

    for m in VOLATILE.finditer(shown):
        literal(shown[pos:m.start()])
        if m.group(1):
            parts.append(".*?")
        elif m.group(2):
            parts.append(TIMESTAMP)
        else:
            parts.append(ELAPSED)
        pos = m.end()
    literal(shown[pos:])
    return re.compile("".join(parts), re.S), numbers


def same_number(printed, shown):
    if printed == shown:
        return True
    a, b = float(printed), float(shown)
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def matches(step):
    out = "\n".join(l.rstrip() for l in step.output.rstrip().split("\n"))
    shown = [l.rstrip() for l in step.shown]
    candidates = ["\n".join(shown).rstrip()]
    if "\n" not in out and step.where[0] == "comment":
        candidates.append("".join(l.strip() for l in shown))
    for c in candidates:
        regex, numbers = pattern_of(c)
        m = regex.fullmatch(out)
        if m and all(same_number(g, n) for g, n in zip(m.groups(), numbers)):
            return True
    return False


def start_daemon(neurond, workdir):
    log = open(os.path.join(workdir, "neurond.log"), "w")
    proc = subprocess.Popen([neurond, "--bind", "127.0.0.1", "--port", "0", "--db",
                             os.path.join(workdir, "neurond.db"), "--log-level", "warn"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"^neurond listening on ([0-9.]+):(\d+)$", line.strip())
        if m:
            return proc, int(m.group(2))
    proc.kill()
    proc.wait()
    sys.exit("run_docs: neurond did not start; see %s/neurond.log" % workdir)


def run_block(steps, port, cwd):
    script = ["exec 2>&1"]
    for s in steps:
        cmd = s.command.replace("localhost:8080", "127.0.0.1:%d" % port)
        cmd = cmd.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
        script.append("printf '%s'" % MARK)
        script.append(cmd)
    script.append("wait")
    try:
        r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, capture_output=True,
                           text=True, timeout=120)
        out = r.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + "\n(timed out after 120 s)"
    pieces = out.split(MARK)[1:]
    for s, p in zip(steps, pieces + [""] * (len(steps) - len(pieces))):
        s.output = p.replace("127.0.0.1:%d" % port, "localhost:8080")


def run_alone(neurond, steps):
    """Run one block against a daemon of its own, in a directory of its own."""
    workdir = tempfile.mkdtemp(prefix="neurond-docs-alone.")
    proc, port = start_daemon(neurond, workdir)
    try:
        run_block(steps, port, workdir)
    finally:
        stop_daemon(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def stop_daemon(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    args = [a for a in sys.argv[1:] if a != "--update"]
    update = "--update" in sys.argv[1:]
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    neurond, doc = os.path.abspath(args[0]), args[1]
    for tool in ("bash", "curl"):
        if shutil.which(tool) is None:
            print("run_docs: needs %s" % tool, file=sys.stderr)
            return 2
    with open(doc, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks = parse(lines)
    workdir = tempfile.mkdtemp(prefix="neurond-docs.")
    failed, checked, ran = 0, 0, 0
    replace = []
    proc, port = start_daemon(neurond, workdir)
    try:
        for steps, alone in blocks:
            if alone:
                run_alone(neurond, steps)
            else:
                run_block(steps, port, workdir)
            for s in steps:
                ran += 1
                if s.shown is None:
                    continue
                checked += 1
                if matches(s):
                    continue
                failed += 1
                print("%s:%d: the output differs from the one shown\n  command: %s\n"
                      "  shown:   %s\n  printed: %s" %
                      (doc, s.line, s.command.replace("\n", "\n           "),
                       "\n           ".join(s.shown),
                       s.output.rstrip().replace("\n", "\n           ")))
                if update and not re.search(ELLIPSIS, "\n".join(s.shown)):
                    replace.append(s)
        if proc.poll() is not None:
            print("run_docs: neurond died during the examples (exit %s)" % proc.returncode)
            failed += 1
    finally:
        stop_daemon(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    for s in sorted(replace, key=lambda s: -s.where[1]):
        kind, first, last = s.where
        out = s.output.rstrip().split("\n")
        if kind == "comment":
            indent = re.match(r"^(\s*)", lines[first]).group(1)
            out = [indent + ("# " + l if l else "#") for l in out]
        lines[first:last + 1] = out
    if replace:
        with open(doc, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        print("run_docs: rewrote %d shown outputs in %s" % (len(replace), doc))
    print("run_docs: %s: %d commands run, %d outputs compared, %d differ" %
          (doc, ran, checked, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
