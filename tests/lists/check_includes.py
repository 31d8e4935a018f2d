#!/usr/bin/env python3
"""tests/lists/check_includes.py -- the includes of lib/ and server/ run one way.

A module is a header and its C file (graph.h + graph.c), with its private headers: a header
a_b.h without a C file of its own, beside a module a, belongs to a (store_internal.h to store,
db_driver.h to db). Module A depends on module B when
a.h or a.c includes "b.h". The dependencies must form no cycle: when graph.c needs ops.h,
ops.h and ops.c must not need graph.h, or the two are one module in two files. lib/ must not
include a server/ header at all.

Usage: check_includes.py <source dir>. Exit 0 when one-way, 1 with every cycle found.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
DIRS = ["lib", "server"]


def private_owner(stem, stems_with_c, stems):
    """The module a private header belongs to, or the stem itself."""
    if stem in stems_with_c or "_" not in stem:
        return stem
    owner = stem.rsplit("_", 1)[0]
    return owner if owner in stems else stem


def modules(root):
    """{module: set of modules it includes}, and {module: its directory}, over DIRS."""
    files = []
    for d in DIRS:
        for name in sorted(os.listdir(os.path.join(root, d))):
            stem, ext = os.path.splitext(name)
            if ext in (".h", ".c"):
                files.append((d, name, stem, ext))
    stems = {f[2] for f in files}
    stems_with_c = {f[2] for f in files if f[3] == ".c"}

    def module(stem):
        return private_owner(stem, stems_with_c, stems)

    deps, where = {}, {}
    for d, name, stem, _ in files:
        with open(os.path.join(root, d, name), encoding="utf-8") as f:
            included = INCLUDE.findall(f.read())
        m = module(stem)
        deps.setdefault(m, set()).update(module(os.path.splitext(i)[0]) for i in included)
        where[m] = d
    return deps, where


def find_cycles(deps):
    """Every cycle once, each as a list of modules, by depth-first search."""
    cycles, seen = [], set()
    state = {}

    def visit(m, path):
        state[m] = "open"
        path.append(m)
        for n in sorted(deps.get(m, ())):
            if n == m or n not in deps:
                continue
            if state.get(n) == "open":
                cycle = path[path.index(n):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cycle + [n])
            elif n not in state:
                visit(n, path)
        path.pop()
        state[m] = "done"

    for m in sorted(deps):
        if m not in state:
            visit(m, [])
    return cycles


def main():
    root = sys.argv[1]
    deps, where = modules(root)
    problems = []
    for m, included in sorted(deps.items()):
        if where[m] == "lib":
            for n in sorted(included):
                if where.get(n) == "server":
                    problems.append(f"lib/{m} includes server/{n}.h: lib must not know the server")
    for cycle in find_cycles(deps):
        problems.append("include cycle: " + " -> ".join(cycle))
    for p in problems:
        print(p)
    if len(deps) < 10:
        print(f"only {len(deps)} modules found under {root}: is the source directory right?")
        return 1
    if not problems:
        print(f"{len(deps)} modules of lib/ and server/ include one another one way")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
