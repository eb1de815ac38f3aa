#!/usr/bin/env python3
"""Write the VNN-LIB fixtures of tests/data/proofs: L-inf robustness of digits test images
(tests/data/digits/test_images.npy, labels beside it) at radii larger than the digits suite's,
where digits_mlp needs ReLU splitting. Standard library only.

    python3 scripts/make_proof_fixtures.py
"""
import ast
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "tests", "data", "digits")
OUT = os.path.join(ROOT, "tests", "data", "proofs")
# (test image, radius)
CASES = [(10, 0.08), (11, 0.09)]


def load_npy(path):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:6] == b"\x93NUMPY", path
    hlen = struct.unpack("<H", raw[8:10])[0]
    header = ast.literal_eval(raw[10 : 10 + hlen].decode("latin1"))
    body = raw[10 + hlen :]
    shape = header["shape"]
    n = 1
    for s in shape:
        n *= s
    fmt = {"<f4": "f", "<i8": "q", "<i4": "i"}[header["descr"]]
    vals = struct.unpack("<%d%s" % (n, fmt), body[: n * struct.calcsize(fmt)])
    return shape, vals


def main():
    (n, d), images = load_npy(os.path.join(DATA, "test_images.npy"))
    _, labels = load_npy(os.path.join(DATA, "test_labels.npy"))
    os.makedirs(OUT, exist_ok=True)
    for idx, eps in CASES:
        x = images[idx * d : (idx + 1) * d]
        y = labels[idx]
        lines = [
            "; digits test image %d, eps %g (box clipped to [0,1]), L-inf robustness, label %d;"
            " the file asserts the unsafe set: sat = counterexample exists" % (idx, eps, y),
            "; written by scripts/make_proof_fixtures.py",
            "",
        ]
        lines += ["(declare-const X_%d Real)" % i for i in range(d)]
        lines += ["(declare-const Y_%d Real)" % j for j in range(10)]
        lines.append("")
        for i, v in enumerate(x):
            lines.append("(assert (>= X_%d %r))" % (i, max(0.0, v - eps)))
            lines.append("(assert (<= X_%d %r))" % (i, min(1.0, v + eps)))
        lines.append("(assert (or")
        lines += ["    (and (>= Y_%d Y_%d))" % (j, y) for j in range(10) if j != y]
        lines.append("))")
        path = os.path.join(OUT, "digits_prop_%d_%g.vnnlib" % (idx, eps))
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(path)


if __name__ == "__main__":
    main()
