#!/usr/bin/python3
"""tests/examples/check.py -- check what one example printed, and the state it left behind.

    check.py CASE URL OUTPUT_FILE        (NEUROND_TOKEN in the environment when auth is on)

CASE is walkthrough | logistic_csv | softmax_iris | early_stopping_iris | graph_jacobian |
client_py | onnx_node. The example's printed answers (every output line that starts with "{") are checked against the expected
numbers, then the model it created is read back through the API: the check never trusts the
example's own summary. Standard library only. Exit 0 when everything holds, else 1 with the
reasons on stderr.
"""
import json
import math
import os
import re
import sys
import urllib.request

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FAILURES = []


def expect(cond, what):
    if not cond:
        FAILURES.append(what)
    return cond


def close(got, want, tol=1e-9):
    """|got - want| <= tol * max(1, |want|), element-wise through nested lists."""
    if isinstance(want, list):
        return (isinstance(got, list) and len(got) == len(want)
                and all(close(g, w, tol) for g, w in zip(got, want)))
    return (isinstance(got, (int, float)) and not isinstance(got, bool)
            and abs(got - want) <= tol * max(1.0, abs(want)))


class Api:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.token = os.environ.get("NEUROND_TOKEN")

    def __call__(self, method, path, body=None):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())


def answers(text):
    """Every JSON answer the example printed, in order."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                FAILURES.append("printed answer is not JSON: " + line[:200])
    return out


def done_model(text):
    m = re.search(r"^# Done: model (\d+),", text, re.M)
    expect(m is not None, 'no "# Done: model N," line')
    return int(m.group(1)) if m else None


def check_walkthrough(api, text):
    got = [a for a in answers(text) if set(a) == {"loss", "rows"}]
    if expect(got, "no /loss answer printed"):
        expect(close(got[0]["loss"], 281.7000511808419),
               "initial loss %r, expected 281.7000511808419" % got[0]["loss"])
    mid = done_model(text)
    if mid is None:
        return
    m = api("GET", "/v1/models/%d" % mid)
    expect(m["step"] == 3, "model step %r, expected 3" % m["step"])
    expect(close(m["loss"], 118.75020113004373), "loss after 3 steps %r" % m["loss"])
    hist = [h["loss"] for h in api("GET", "/v1/models/%d/history" % mid)["history"]]
    expect(close(hist, [281.7000511808419, 223.9545887243877, 170.73545728828958]),
           "history losses %r" % hist)


def check_logistic_csv(api, text):
    mid = done_model(text)
    if mid is None:
        return
    ev = api("POST", "/v1/models/%d/loss" % mid, {})
    expect(ev["rows"] == 200, "rows %r, expected 200" % ev["rows"])
    expect(ev["accuracy"] >= 0.99, "training accuracy %r < 0.99" % ev["accuracy"])
    b = api("GET", "/v1/models/%d/boundary" % mid)
    u, offset = b["unit_normal"], b["offset"]
    expect(close(math.hypot(*u), 1.0), "unit normal %r is not a unit vector" % u)
    true_u = (1.5 / math.hypot(1.5, 1.0), -1.0 / math.hypot(1.5, 1.0))
    cos = u[0] * true_u[0] + u[1] * true_u[1]
    expect(cos >= math.cos(math.radians(10)),
           "boundary normal %r is %.1f degrees from the generating line's" %
           (u, math.degrees(math.acos(max(-1.0, min(1.0, cos))))))
    # The printed boundary is the one read back, and it separates the shipped rows.
    printed = [a for a in answers(text) if "unit_normal" in a]
    expect(printed and close(printed[-1]["unit_normal"], u) and close(printed[-1]["offset"],
           offset), "printed boundary differs from the model's")
    wrong = 0
    with open(os.path.join(SRC, "examples", "data", "separable.csv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            x1, x2, label = (float(v) for v in line.split(","))
            side = u[0] * x1 + u[1] * x2 - offset > 0
            wrong += side != (label == 1)
    expect(wrong == 0, "%d rows of separable.csv are on the wrong side of the boundary" % wrong)


def check_softmax_iris(api, text):
    mid = done_model(text)
    if mid is None:
        return
    ev = api("POST", "/v1/models/%d/loss" % mid, {})
    expect(ev["rows"] == 150, "rows %r, expected 150" % ev["rows"])
    expect(ev["accuracy"] >= 0.9, "training accuracy %r < 0.9" % ev["accuracy"])
    p = api("POST", "/v1/models/%d/predict" % mid,
            {"x": [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]})
    expect(p["classes"] == [0, 1, 2], "first flower of each species predicted %r" % p["classes"])
    for row in p["outputs"]:
        expect(close(sum(row), 1.0), "probabilities %r do not sum to 1" % row)


def check_early_stopping_iris(api, text):
    mid = done_model(text)
    if mid is None:
        return
    m = api("GET", "/v1/models/%d" % mid)
    expect(m["rows"] == 120 and m["validation_rows"] == 30,
           "rows %r and validation_rows %r, expected 120 and 30" % (m["rows"], m["validation_rows"]))
    runs = [a for a in answers(text) if "stopped" in a]
    if not expect(runs, "no train result printed"):
        return
    run = runs[-1]
    expect(run["stopped"] == "early_stopping", "stopped %r, expected early_stopping" % run["stopped"])
    expect(m["step"] == run["step"], "model step %r, the run said %r" % (m["step"], run["step"]))
    best = run["best_step"]
    expect(0 <= best < run["step"], "best_step %r not before the stop step %r" % (best, run["step"]))
    # The model was put back at the best step: its validation loss is the best one, and history
    # recorded that loss at that step.
    val = api("POST", "/v1/models/%d/loss" % mid, {"split": "validation"})
    expect(close(val["loss"], run["best_val_loss"], 1e-12) and
           close(val["loss"], run["val_loss_after"], 1e-12),
           "validation loss %r, the run's best %r" % (val["loss"], run["best_val_loss"]))
    rows = api("GET", "/v1/models/%d/history?after_step=%d&limit=1" % (mid, best - 1))["history"]
    expect(rows and rows[0]["step"] == best and close(rows[0]["val_loss"], run["best_val_loss"]),
           "history row of the best step %r" % rows[:1])
    ev = api("POST", "/v1/models/%d/evaluate" % mid, {"split": "validation"})
    expect(ev["rows"] == 30, "validation rows %r, expected 30" % ev["rows"])
    expect(ev["metrics"]["accuracy"] >= 0.9, "validation accuracy %r < 0.9" % ev["metrics"]["accuracy"])
    cm = ev["metrics"]["confusion_matrix"]
    expect([sum(r) for r in cm] == [10, 10, 10], "confusion matrix rows %r, expected 10 each" % cm)


def check_graph_jacobian(api, text):
    got = [a for a in answers(text) if "jacobian" in a]
    want = [[[1], [3]], [[3, 2], [3, 18]], [[9], [57]]]
    if not expect(len(got) == 3, "%d graph answers printed, expected 3" % len(got)):
        return
    for a, w in zip(got, want):
        expect(close(a["jacobian"], w), "jacobian %r, expected %r" % (a["jacobian"], w))
        expect(close(a["gradients"]["t"], [66]), "dL/dt %r, expected [66]" % a["gradients"])
        expect(close(a["values"]["F"], [[6.75, 24.75]]), "F(G(1.5)) %r" % a["values"]["F"])


def check_client_py(api, text):
    m = re.search(r"^model (\d+): accuracy (\S+) on (\d+) rows", text, re.M)
    if not expect(m is not None, 'no "model N: accuracy A on M rows" line'):
        return
    mid, acc = int(m.group(1)), float(m.group(2))
    expect(int(m.group(3)) == 200, "rows %s, expected 200" % m.group(3))
    expect(acc >= 0.99, "accuracy %r < 0.99" % acc)
    ev = api("POST", "/v1/models/%d/loss" % mid, {})
    expect(ev["accuracy"] == acc, "printed accuracy %r, the API says %r" % (acc, ev["accuracy"]))
    hist = api("GET", "/v1/models/%d/history" % mid)["history"]
    expect(hist and hist[-1]["step"] == 499, "history does not end at step 499")


def check_onnx_node(api, text):
    m = re.search(r"^# Done: model (\d+), ONNX accuracy (\S+) \(the API's: (\S+)\), "
                  r"max relative difference (\S+)\.$", text, re.M)
    if not expect(m is not None, 'no "# Done: model N, ONNX accuracy ..." line'):
        return
    mid, acc, api_acc, diff = int(m.group(1)), float(m.group(2)), float(m.group(3)), \
        float(m.group(4))
    ev = api("POST", "/v1/models/%d/loss" % mid, {})
    expect(ev["rows"] == 150, "rows %r, expected 150" % ev["rows"])
    expect(ev["accuracy"] == api_acc, "printed API accuracy %r, the API says %r"
           % (api_acc, ev["accuracy"]))
    expect(acc == ev["accuracy"], "ONNX Runtime's accuracy %r, the API's %r"
           % (acc, ev["accuracy"]))
    expect(acc >= 0.9, "accuracy %r < 0.9" % acc)
    expect(diff <= 1e-12, "ONNX Runtime's probabilities differ by %r relative" % diff)
    expect("application/octet-stream" in text, "the export's content type was not printed")


CASES = {"walkthrough": check_walkthrough, "logistic_csv": check_logistic_csv,
         "softmax_iris": check_softmax_iris, "graph_jacobian": check_graph_jacobian,
         "client_py": check_client_py, "onnx_node": check_onnx_node,
         "early_stopping_iris": check_early_stopping_iris}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in CASES:
        print("usage: check.py {%s} URL OUTPUT_FILE" % "|".join(CASES), file=sys.stderr)
        return 2
    case, url, path = sys.argv[1:]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        CASES[case](Api(url), text)
    except Exception as e:      # an API call failed or an answer lacks a field
        FAILURES.append("%s: %s" % (type(e).__name__, e))
    for f in FAILURES:
        print("check %s: %s" % (case, f), file=sys.stderr)
    if not FAILURES:
        print("check %s: ok" % case)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
