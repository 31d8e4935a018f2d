#!/usr/bin/env python3
"""tests/openapi/check_openapi.py -- docs/openapi.json stays in step with the routes.

Offline and fast (registered with CTest as `openapi`):
  - the document is JSON, OpenAPI 3.0.3, and every internal $ref resolves;
  - every route in server/routes_*.c ({"METHOD", "/path", handler}) is documented with that
    method, and the document has no path the daemon does not serve;
  - every /v1 operation lists its error answers and every response has a description;
  - every route's query parameters (the names its route table entry accepts) are exactly the
    query parameters documented for its operation.

With NEUROND_OPENAPI_VALIDATE=1 it also runs a standard validator through npx
(@apidevtools/swagger-cli); that needs npm and the network, so it is off by default.

usage: check_openapi.py <source dir>
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys


def fail(msg):
    print("openapi: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    path = os.path.join(src, "docs", "openapi.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("openapi") != "3.0.3":
        fail("openapi is %r, expected 3.0.3" % doc.get("openapi"))

    def resolve(ref):
        node = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                fail("unresolved $ref " + ref)
            node = node[part]
        return node

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)

    routes = set()
    accepted = {}                    # (method, path) -> query names its table entry accepts
    for rf in glob.glob(os.path.join(src, "server", "routes_*.c")):
        with open(rf, encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r'\{\s*"(GET|POST|PUT|DELETE)"\s*,\s*"([^"]+)"\s*,', text):
            routes.add((m.group(1).lower(), m.group(2)))
        for m in re.finditer(r'\{\s*"(GET|POST|PUT|DELETE)"\s*,\s*"([^"]+)"\s*,\s*\w+\s*,'
                             r'\s*(NULL|"[^"]*")', text):
            names = set() if m.group(3) == "NULL" else set(m.group(3).strip('"').split(","))
            accepted[(m.group(1).lower(), m.group(2))] = names
    if len(routes) < 4:
        fail("found only %d routes in server/routes_*.c" % len(routes))
    documented = set()
    for p, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            documented.add((method, p))
            for status, resp in op.get("responses", {}).items():
                if "$ref" not in resp and not resp.get("description"):
                    fail("%s %s: response %s has no description" % (method.upper(), p, status))
            if p.startswith("/v1/") and not any(s.startswith("4") for s in op["responses"]):
                fail("%s %s lists no 4xx answer" % (method.upper(), p))
    for (method, p), names in sorted(accepted.items()):
        item = doc["paths"].get(p, {})
        params = item.get("parameters", []) + item.get(method, {}).get("parameters", [])
        params = [resolve(q["$ref"]) if "$ref" in q else q for q in params]
        documented_query = {q["name"] for q in params if q.get("in") == "query"}
        if documented_query != names:
            fail("%s %s: the route accepts query parameters %s, docs/openapi.json documents %s"
                 % (method.upper(), p, sorted(names), sorted(documented_query)))
    missing = sorted(routes - documented)
    extra = sorted(documented - routes)
    if missing:
        fail("routes not in docs/openapi.json: " + ", ".join("%s %s" % (m.upper(), p) for m, p in missing))
    if extra:
        fail("docs/openapi.json documents routes the daemon does not serve: "
             + ", ".join("%s %s" % (m.upper(), p) for m, p in extra))
    print("openapi: %d operations documented, all %d routes covered" % (len(documented), len(routes)))

    if os.environ.get("NEUROND_OPENAPI_VALIDATE") == "1":
        npx = shutil.which("npx")
        if npx is None:
            print("openapi: NEUROND_OPENAPI_VALIDATE=1 but npx is not installed: validator skipped")
            return
        rc = subprocess.call([npx, "--yes", "@apidevtools/swagger-cli", "validate", path])
        if rc != 0:
            fail("swagger-cli validate failed")
    else:
        print("openapi: standard validator skipped (set NEUROND_OPENAPI_VALIDATE=1 to run it)")


if __name__ == "__main__":
    main()
