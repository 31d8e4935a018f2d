"""Every metric of POST /evaluate against scikit-learn (run by tests/sklearn/run.sh).

On sklearn's bundled iris, breast-cancer, digits and diabetes sets, split into a train and a
validation batch, models of every kind are trained briefly; then on each split the metrics
/evaluate returns must equal sklearn.metrics applied to the daemon's own /predict answers for
the same rows: to 1e-9 relative, log loss to 1e-6 (sklearn clips probabilities, the daemon
computes it from the logits).

  regression  mse, rmse, mae, r2          mean_squared_error, its root, mean_absolute_error,
                                          r2_score (uniform average over outputs)
  binary      accuracy, precision, recall accuracy_score, precision_score, recall_score,
              f1, confusion_matrix,       f1_score (zero_division=0), confusion_matrix,
              roc_auc, log_loss           roc_auc_score on p (margins for the perceptron),
                                          log_loss on p
  multiclass  accuracy, macro precision,  the same with average="macro", labels=range(k);
              recall, f1, confusion,      precision_recall_fscore_support per class;
              per_class, log_loss         log_loss on the probabilities
"""
import json
import math
import os
import sys
import urllib.error
import urllib.request

import numpy as np
from sklearn import datasets, metrics

URL = os.environ.get("NEUROND_URL", "http://127.0.0.1:8080")
REL = 1e-9
REL_LOG_LOSS = 1e-6
failures = []
checked = 0


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {path}: {e.code} {e.read().decode()}") from None


def close(got, want, rel):
    if got is None or want is None:
        return got is None and want is None
    return abs(got - want) <= rel * max(abs(got), abs(want)) + 1e-12


def expect(case, name, got, want, rel=REL):
    global checked
    checked += 1
    if isinstance(want, (list, np.ndarray)):
        want = np.asarray(want).tolist()
        if got != want:
            failures.append(f"{case}: {name} = {got}, sklearn {want}")
        return
    want = float(want)
    if not close(got, want, rel):
        failures.append(f"{case}: {name} = {got!r}, sklearn {want!r}")


def split(x, y, seed):
    order = np.random.RandomState(seed).permutation(len(x))
    cut = int(len(x) * 0.75)
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def standardize(train, val):
    mu, sd = train[0].mean(axis=0), train[0].std(axis=0)
    sd[sd == 0] = 1.0
    return ((train[0] - mu) / sd, train[1]), ((val[0] - mu) / sd, val[1])


def make_model(spec, train, val, steps):
    m = call("POST", "/v1/models", spec)
    mid = m["id"]
    call("POST", f"/v1/models/{mid}/batches", {"x": train[0].tolist(), "y": train[1].tolist()})
    call("POST", f"/v1/models/{mid}/batches?split=validation",
         {"x": val[0].tolist(), "y": val[1].tolist()})
    call("POST", f"/v1/models/{mid}/train", {"steps": steps})
    return mid


def check_regression(case, ev, y, pred):
    m = ev["metrics"]
    mse = metrics.mean_squared_error(y, pred)
    expect(case, "mse", m["mse"], mse)
    expect(case, "rmse", m["rmse"], math.sqrt(mse))
    expect(case, "mae", m["mae"], metrics.mean_absolute_error(y, pred))
    expect(case, "r2", m["r2"], metrics.r2_score(y, pred))


def check_binary(case, ev, y, pred, perceptron):
    m = ev["metrics"]
    classes = pred["classes"]
    score = pred["margins"] if perceptron else pred["outputs"]
    expect(case, "accuracy", m["accuracy"], metrics.accuracy_score(y, classes))
    expect(case, "precision", m["precision"],
           metrics.precision_score(y, classes, zero_division=0))
    expect(case, "recall", m["recall"], metrics.recall_score(y, classes, zero_division=0))
    expect(case, "f1", m["f1"], metrics.f1_score(y, classes, zero_division=0))
    expect(case, "confusion_matrix", m["confusion_matrix"],
           metrics.confusion_matrix(y, classes, labels=[0, 1]))
    expect(case, "roc_auc", m["roc_auc"], metrics.roc_auc_score(y, score))
    if perceptron:
        if "log_loss" in m:
            failures.append(f"{case}: a perceptron has no log_loss")
    else:
        expect(case, "log_loss", m["log_loss"],
               metrics.log_loss(y, pred["outputs"], labels=[0, 1]), REL_LOG_LOSS)


def check_multiclass(case, ev, y, pred, k, probabilities):
    m = ev["metrics"]
    classes = pred["classes"]
    labels = list(range(k))
    expect(case, "accuracy", m["accuracy"], metrics.accuracy_score(y, classes))
    for name, fn in (("precision", metrics.precision_score), ("recall", metrics.recall_score),
                     ("f1", metrics.f1_score)):
        expect(case, name, m[name],
               fn(y, classes, labels=labels, average="macro", zero_division=0))
    expect(case, "confusion_matrix", m["confusion_matrix"],
           metrics.confusion_matrix(y, classes, labels=labels))
    p, r, f, s = metrics.precision_recall_fscore_support(y, classes, labels=labels,
                                                         zero_division=0)
    if len(m["per_class"]) != k:
        failures.append(f"{case}: per_class has {len(m['per_class'])} entries, expected {k}")
    for j, c in enumerate(m["per_class"]):
        expect(case, f"per_class[{j}].class", c["class"], j)
        expect(case, f"per_class[{j}].precision", c["precision"], p[j])
        expect(case, f"per_class[{j}].recall", c["recall"], r[j])
        expect(case, f"per_class[{j}].f1", c["f1"], f[j])
        expect(case, f"per_class[{j}].support", c["support"], s[j])
    if probabilities:
        expect(case, "log_loss", m["log_loss"],
               metrics.log_loss(y, pred["outputs"], labels=labels), REL_LOG_LOSS)
    elif "log_loss" in m:
        failures.append(f"{case}: {ev} has a log_loss, its scores are no distribution")


def check_model(name, spec, data, steps, family, k=2):
    train, val = data
    mid = make_model(spec, train, val, steps)
    for split_name, (x, y) in (("train", train), ("validation", val)):
        case = f"{name} ({split_name})"
        ev = call("POST", f"/v1/models/{mid}/evaluate", {"split": split_name})
        pred = call("POST", f"/v1/models/{mid}/predict", {"x": x.tolist()})
        loss = call("POST", f"/v1/models/{mid}/loss", {"split": split_name})["loss"]
        expect(case, "rows", ev["rows"], len(x))
        expect(case, "loss", ev["loss"], loss)
        if family == "regression":
            check_regression(case, ev, y, np.asarray(pred["outputs"]))
        elif family == "binary":
            check_binary(case, ev, y, pred, spec["kind"] == "perceptron")
        else:
            probabilities = spec["kind"] in ("softmax", "mlp")
            check_multiclass(case, ev, y, pred, k, probabilities)
    print(f"ok   {name}")


def main():
    iris = datasets.load_iris()
    iris_data = standardize(*split(iris.data, iris.target, 1))
    cancer = datasets.load_breast_cancer()
    cancer_data = standardize(*split(cancer.data, cancer.target, 2))
    digits = datasets.load_digits()
    digits_data = standardize(*split(digits.data, digits.target, 3))
    diabetes = datasets.load_diabetes()
    diabetes_data = standardize(*split(diabetes.data, diabetes.target, 4))
    # Two outputs: the target and a second made from it, so r2 averages over outputs.
    y2 = np.stack([diabetes.target, diabetes.target * 0.5 + diabetes.data[:, 2] * 100], axis=1)
    diabetes2 = standardize(*split(diabetes.data, y2, 4))

    adam = {"method": "adam", "learning_rate": 0.05}
    init = {"method": "normal", "scale": 0.1, "seed": 7}
    check_model("iris softmax", {"kind": "softmax", "inputs": 4, "classes": 3,
                                 "optimizer": adam, "init": init}, iris_data, 30, "multi", 3)
    check_model("iris ova", {"kind": "ova", "inputs": 4, "classes": 3, "optimizer": adam,
                             "init": init}, iris_data, 5, "multi", 3)
    check_model("iris ovo", {"kind": "ovo", "inputs": 4, "classes": 3, "optimizer": adam,
                             "init": init}, iris_data, 5, "multi", 3)
    check_model("iris mlp", {"kind": "mlp", "inputs": 4, "outputs": 3,
                             "hidden": [{"units": 6, "activation": "tanh"}],
                             "output_activation": "softmax", "optimizer": adam, "init": init},
                iris_data, 20, "multi", 3)
    check_model("cancer logistic", {"kind": "logistic", "inputs": 30, "optimizer": adam,
                                    "init": init}, cancer_data, 20, "binary")
    check_model("cancer perceptron", {"kind": "perceptron", "inputs": 30, "init": init,
                                      "optimizer": {"method": "sgd", "learning_rate": 0.1}},
                cancer_data, 3, "binary")
    check_model("cancer mlp", {"kind": "mlp", "inputs": 30,
                               "hidden": [{"units": 4, "activation": "relu"}],
                               "output_activation": "sigmoid", "optimizer": adam, "init": init},
                cancer_data, 10, "binary")
    check_model("digits softmax", {"kind": "softmax", "inputs": 64, "classes": 10,
                                   "optimizer": adam, "init": init}, digits_data, 10, "multi", 10)
    check_model("digits ovo", {"kind": "ovo", "inputs": 64, "classes": 10, "optimizer": adam,
                               "init": init}, digits_data, 3, "multi", 10)
    check_model("diabetes linear", {"kind": "linear", "inputs": 10,
                                    "optimizer": {"method": "adam", "learning_rate": 2.0},
                                    "init": init}, diabetes_data, 40, "regression")
    check_model("diabetes mlp", {"kind": "mlp", "inputs": 10,
                                 "hidden": [{"units": 5, "activation": "tanh"}],
                                 "optimizer": {"method": "adam", "learning_rate": 0.5},
                                 "init": init}, diabetes_data, 30, "regression")
    check_model("diabetes linear, 2 outputs", {"kind": "linear", "inputs": 10, "outputs": 2,
                                               "optimizer": {"method": "adam",
                                                             "learning_rate": 2.0},
                                               "init": init}, diabetes2, 40, "regression")
    for f in failures:
        print("FAIL " + f)
    print(f"check_metrics: {checked} comparisons, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
