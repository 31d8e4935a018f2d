#!/usr/bin/env python3
"""examples/client.py -- a tiny neurond client using only the Python standard library.

NeurondClient wraps the HTTP API (urllib.request + json): create a model, post a batch (JSON
rows or a CSV file), train, loss, predict, history, boundary, delete. Errors come back as
NeurondError with the HTTP status and the API's error code, message and field.

The main program trains logistic regression on examples/data/separable.csv and prints the
training accuracy:

    scripts/serve &                              # or any running neurond
    python3 examples/client.py                   # NEUROND_URL, NEUROND_TOKEN as for the scripts
    python3 examples/client.py --csv my.csv --steps 1000

As a library:

    from client import NeurondClient
    c = NeurondClient("http://127.0.0.1:8080", token=None)
    m = c.create_model({"kind": "logistic", "inputs": 2})
    c.post_batch(m["id"], x=[[0, 1], [1, 0]], y=[0, 1])
    c.train(m["id"], steps=100)
    print(c.predict(m["id"], [[1, 0]])["outputs"])

Exit status: 0 when training accuracy reaches --min-accuracy (default 0.99), 1 when it does not
or a request fails.
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


class NeurondError(Exception):
    """A non-2xx answer: `status` (HTTP), `code` ("invalid_argument", ...), `message`, `field`."""

    def __init__(self, status, code, message, field=None):
        super().__init__("HTTP %d %s: %s%s" % (status, code, message,
                                               " (field %s)" % field if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


class NeurondClient:
    """One neurond daemon. `token`: the bearer token when neurond runs with --token-file."""

    def __init__(self, url="http://127.0.0.1:8080", token=None, timeout=60.0):
        self.url = url.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    # -- transport -------------------------------------------------------------------------

    def request(self, method, path, body=None, content_type="application/json", query=None):
        """Send one request; return the decoded JSON answer (None for 204). `body` is a dict or
        list (sent as JSON), bytes or str (sent as is with `content_type`), or None."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode("utf-8")
                content_type = "application/json"
            else:
                data = body.encode("utf-8") if isinstance(body, str) else body
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": "http_%d" % e.code, "message": raw.decode("utf-8", "replace")}
            raise NeurondError(e.code, err.get("code", "?"), err.get("message", ""),
                               err.get("field")) from None
        return json.loads(raw) if raw else None

    # -- models and data --------------------------------------------------------------------

    def create_model(self, spec):
        """POST /v1/models: the new model object (its "id" names it from now on)."""
        return self.request("POST", "/v1/models", spec)

    def get_model(self, model_id):
        return self.request("GET", "/v1/models/%d" % model_id)

    def delete_model(self, model_id):
        self.request("DELETE", "/v1/models/%d" % model_id)

    def post_batch(self, model_id, x, y):
        """Store rows x (a list of feature lists) with labels y: {"batch_id","rows","total_rows"}."""
        return self.request("POST", "/v1/models/%d/batches" % model_id, {"x": x, "y": y})

    def post_csv(self, model_id, path, header="auto"):
        """Store the rows of a CSV file (label in the last column), sent as text/csv."""
        with open(path, "rb") as f:
            return self.request("POST", "/v1/models/%d/batches" % model_id, f.read(),
                                content_type="text/csv", query={"header": header})

    # -- training and queries ----------------------------------------------------------------

    def train(self, model_id, steps=1, **options):
        """POST .../train with any train-request fields (learning_rate, tolerance, ...)."""
        body = dict(options, steps=steps)
        return self.request("POST", "/v1/models/%d/train" % model_id, body)

    def loss(self, model_id, x=None, y=None):
        """Loss (and accuracy, for classifiers) on x, y, or on all stored rows when x is None."""
        body = {} if x is None else {"x": x, "y": y}
        return self.request("POST", "/v1/models/%d/loss" % model_id, body)

    def predict(self, model_id, x):
        return self.request("POST", "/v1/models/%d/predict" % model_id, {"x": x})

    def boundary(self, model_id):
        return self.request("GET", "/v1/models/%d/boundary" % model_id)

    def history(self, model_id, max_points=None):
        """Every history row (following "next" pages), or an even sample of max_points rows."""
        path = "/v1/models/%d/history" % model_id
        if max_points is not None:
            return self.request("GET", path, query={"max_points": max_points})["history"]
        rows, after = [], None
        while True:
            page = self.request("GET", path, query={} if after is None else {"after_step": after})
            rows.extend(page["history"])
            after = page.get("next")
            if after is None:
                return rows


def main():
    ap = argparse.ArgumentParser(description="Train logistic regression on a CSV with neurond.")
    ap.add_argument("--url", default=os.environ.get("NEUROND_URL", "http://127.0.0.1:8080"))
    ap.add_argument("--csv", default=os.path.join(HERE, "data", "separable.csv"))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--learning-rate", type=float, default=0.5)
    ap.add_argument("--min-accuracy", type=float, default=0.99)
    args = ap.parse_args()

    client = NeurondClient(args.url, token=os.environ.get("NEUROND_TOKEN"))
    try:
        with open(args.csv, encoding="utf-8") as f:
            first = f.readline()
        inputs = first.count(",")          # every column but the label
        model = client.create_model({"kind": "logistic", "inputs": inputs,
                                     "optimizer": {"method": "sgd",
                                                   "learning_rate": args.learning_rate}})
        mid = model["id"]
        print("created model %d (logistic, %d inputs)" % (mid, inputs))
        batch = client.post_csv(mid, args.csv)
        print("posted %d rows from %s" % (batch["rows"], os.path.basename(args.csv)))
        result = client.train(mid, steps=args.steps, history_every=50)
        print("trained %d steps: loss %.6g -> %.6g (%s)" % (result["steps_run"],
              result["loss_before"], result["loss_after"], result["stopped"]))
        hist = client.history(mid)
        print("history: %d rows, steps %d..%d" % (len(hist), hist[0]["step"], hist[-1]["step"]))
        ev = client.loss(mid)
        b = client.boundary(mid)
        print("boundary: unit normal [%s], offset %.6g"
              % (", ".join("%.6g" % v for v in b["unit_normal"]), b["offset"]))
        p = client.predict(mid, [[2.0, -1.0], [-2.0, 1.0]])
        print("predict [2,-1], [-2,1]: p = [%s], classes %s"
              % (", ".join("%.4f" % v for v in p["outputs"]), p["classes"]))
    except (NeurondError, OSError) as e:
        print("client.py: %s" % e, file=sys.stderr)
        return 1
    print("model %d: accuracy %s on %d rows (%d errors)" % (mid, repr(ev["accuracy"]), ev["rows"],
                                                          ev["errors"]))
    if ev["accuracy"] < args.min_accuracy:
        print("client.py: accuracy %r is below %r" % (ev["accuracy"], args.min_accuracy),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
