"""laplace-torch 0.3's timings for `secondo bench --laplace`: fit, marginal-
likelihood optimization (100 Adam steps on the prior precision) and the GLM
predictive (in batches of 256), each the median of ``--repeats`` runs, with laplace-torch's
default backend for each structure, in float32 on the CPU.

Usage: bench_laplace.py --data DIGITS.safetensors --regression WAVE.safetensors
[--repeats R]; prints one JSON object {case: {fit, marglik, predict}} (seconds)
plus ``peak_rss_bytes`` of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(__file__))
from common import build_model  # noqa: E402

CASES = [
    # name, spec, data, likelihood, structure, subset
    ("mlp_kron", "linear(64,128),tanh,linear(128,10)", "data", "classification", "kron", "all"),
    ("mlp_diag", "linear(64,128),tanh,linear(128,10)", "data", "classification", "diag", "all"),
    ("mlp_last_layer_full", "linear(64,128),tanh,linear(128,10)", "data", "classification", "full", "last_layer"),
    ("regression_full", "linear(1,50),tanh,linear(50,1)", "regression", "regression", "full", "all"),
]


def median_time(repeats, f):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    from laplace import Laplace

    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--regression", required=True)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    sets = {}
    for key, path in (("data", a.data), ("regression", a.regression)):
        t = load_file(path)
        x = t["x"].float().reshape(t["x"].shape[0], -1)
        y = t["y"]
        sets[key] = (x, y.long() if y.dtype == torch.int64 else y.float().reshape(len(y), -1))
    out = {}
    for name, spec, key, likelihood, structure, subset in CASES:
        x, y = sets[key]
        model = build_model(spec, torch.float32)
        loader = DataLoader(TensorDataset(x, y), batch_size=256)

        def fitted():
            la = Laplace(model, likelihood, subset_of_weights=subset, hessian_structure=structure)
            la.fit(loader)
            return la

        la = fitted()
        row = {"fit": median_time(a.repeats, fitted), "backend": type(la.backend).__name__}
        row["marglik"] = median_time(
            a.repeats, lambda: la.optimize_prior_precision(method="marglik", n_steps=100, lr=0.1))
        # In batches of 256, as secondo predicts (all at once needs tens of GB).
        link = {"link_approx": "probit"} if likelihood == "classification" else {}
        row["predict"] = median_time(
            a.repeats, lambda: [la(xb, pred_type="glm", **link) for xb in x.split(256)])
        out[name] = row
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["laplace_torch_version"] = __import__("importlib.metadata").metadata.version("laplace-torch")
    out["torch_version"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
