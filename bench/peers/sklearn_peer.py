"""bench/peers/sklearn_peer.py -- scikit-learn's L-BFGS on W1: time to the optimum.

    sklearn_peer.py DIR WORKLOAD.json [--reps R]

First a reference optimum: LogisticRegression(penalty=None, solver="lbfgs", tol=1e-12,
max_iter=10000), its mean binary cross-entropy L* computed here (the same loss libneuron
reports). Then R timed fits as a user would run them (penalty=None, default tol=1e-4,
max_iter=1000); a fit counts as reaching the optimum when its loss is within 1e-4 of L*; when
the default tolerance does not get there, the next tighter tol (1e-6, 1e-8) is timed instead
and reported. Prints one JSON line.
"""
import sys
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

import common


def mean_bce(X, y, coef, intercept):
    z = X @ coef.ravel() + intercept[0]
    return float(np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def main():
    reps = 3
    if len(sys.argv) >= 5 and sys.argv[3] == "--reps":
        reps = int(sys.argv[4])
    w = common.load(sys.argv[2], sys.argv[1])
    if w["acts"] != ["sigmoid"] or w["loss"] != "bce":
        raise SystemExit("sklearn peer: W1 must be logistic regression with bce")
    X, y = w["X"], w["Y"][:, 0]
    warnings.simplefilter("ignore")
    ref = LogisticRegression(penalty=None, solver="lbfgs", tol=1e-12, max_iter=10000).fit(X, y)
    l_star = mean_bce(X, y, ref.coef_, ref.intercept_)
    runs = []
    for tol in (1e-4, 1e-6, 1e-8):
        runs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            clf = LogisticRegression(penalty=None, solver="lbfgs", tol=tol, max_iter=1000).fit(X, y)
            s = time.perf_counter() - t0
            loss = mean_bce(X, y, clf.coef_, clf.intercept_)
            runs.append({"seconds": s, "loss": loss, "gap": loss - l_star, "n_iter": int(clf.n_iter_[0])})
        if all(r["gap"] <= 1e-4 for r in runs):
            break
    common.emit({"runner": "sklearn", "workload": w["name"], "l_star": l_star, "ref_n_iter": int(ref.n_iter_[0]),
                 "tol": tol, "runs": runs, "threadpools": common.threadpools()})


if __name__ == "__main__":
    main()
