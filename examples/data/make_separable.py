#!/usr/bin/python3
"""examples/data/make_separable.py -- regenerate examples/data/separable.csv.

200 points (x1, x2) drawn uniformly from the square [-3, 3]^2 by a seeded generator, labelled 1
when 1.5*x1 - x2 + 0.5 > 0 and 0 otherwise. Points closer than 0.25 to that line are drawn again,
so the two classes are linearly separable with a margin: logistic regression reaches 100 %
training accuracy. Values have three decimals; the file has a header line.

Deterministic: the same file on every run and every platform (it uses only random.Random(seed)
.random(), whose sequence Python guarantees across versions for a given seed).

    examples/data/make_separable.py > examples/data/separable.csv
"""
import math
import random
import sys

SEED = 20261128
ROWS = 200
THETA = (0.5, 1.5, -1.0)   # bias, x1, x2: the true boundary 0.5 + 1.5 x1 - x2 = 0
MARGIN = 0.25


def main():
    rng = random.Random(SEED)
    norm = math.hypot(THETA[1], THETA[2])
    out = sys.stdout
    out.write("x1,x2,label\n")
    n = 0
    while n < ROWS:
        x1 = round(rng.random() * 6.0 - 3.0, 3)
        x2 = round(rng.random() * 6.0 - 3.0, 3)
        z = THETA[0] + THETA[1] * x1 + THETA[2] * x2
        if abs(z) / norm < MARGIN:
            continue
        out.write("%.3f,%.3f,%d\n" % (x1, x2, 1 if z > 0 else 0))
        n += 1


if __name__ == "__main__":
    main()
