#!/usr/bin/env python3
"""Writes the digits as an autoencoder dataset: `x` and `y` both the 1,797
images as 64 pixels scaled to [0, 1] (f32 safetensors, no dependencies), for
the deep-autoencoder benchmark of docs/PERFORMANCE.md.

    python3 scripts/digits_autoencoder_data.py crates/data/assets/digits.csv.gz ae.safetensors
"""
import gzip
import json
import struct
import sys


def main(source, out):
    rows = []
    with gzip.open(source, "rt") as f:
        for line in f:
            values = [float(v) for v in line.strip().split(",")]
            rows.append([v / 16.0 for v in values[:64]])
    n = len(rows)
    data = struct.pack(f"<{n * 64}f", *[v for row in rows for v in row])
    size = len(data)
    header = {
        "x": {"dtype": "F32", "shape": [n, 64], "data_offsets": [0, size]},
        "y": {"dtype": "F32", "shape": [n, 64], "data_offsets": [size, 2 * size]},
    }
    text = json.dumps(header, sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
        f.write(data)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
