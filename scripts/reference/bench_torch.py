#!/usr/bin/env python3
"""PyTorch / BackPACK / curvlinops timing baseline for secondo.

Model ``linear(784,256),relu,linear(256,256),relu,linear(256,10)``, batch 128, float32,
cross-entropy (mean), random data, CPU, torch's default thread count. Every quantity is
run ``--warmup`` times untimed, then ``--repeats`` times, each time followed by a plain
gradient step (timed too: the machine's speed drifts, and a ratio of medians taken side by
side does not); the median wall times are reported in milliseconds. Output: one JSON
object on stdout::

    {"torch_version": ..., "threads": ..., "median_ms": {"grad": ..., ...},
     "paired_grad_ms": {"hvp": ..., ...}, "config": {...}}

With ``--serve-grad`` it instead reads a count ``k`` per line from stdin, runs ``k`` timed
gradient steps back to back and prints their milliseconds on one line, so that another
program can alternate blocks of its own steps with blocks of these.

Usage::

    .venv/bin/python scripts/reference/bench_torch.py                # everything
    .venv/bin/python scripts/reference/bench_torch.py --only grad    # plain step only
    .venv/bin/python scripts/reference/bench_torch.py --only grad,hvp --repeats 50
    .venv/bin/python scripts/reference/bench_torch.py --serve-grad   # counts in, ms out

Quantities that fail are omitted from ``median_ms`` with a message on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")

SPEC = "linear(784,256),relu,linear(256,256),relu,linear(256,10)"
BATCH = 128
MC_SAMPLES = 1

BACKPACK_QUANTITIES = [
    "batch_grad", "batch_l2", "sum_grad_squared", "variance", "diag_ggn_mc",
    "diag_ggn_exact", "kfac", "kflr", "diag_hessian",
]
CURVLINOPS_QUANTITIES = ["hvp", "ggnvp", "efvp", "fishervp", "eigsh_top10"]
ALL = ["grad"] + BACKPACK_QUANTITIES + CURVLINOPS_QUANTITIES


def eprint(*a):
    print(*a, file=sys.stderr, flush=True)


def pkg_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def timed_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def paired_median_ms(fn, baseline, warmup: int, repeats: int) -> tuple[float, float]:
    """Medians of ``fn`` and ``baseline`` run alternately, one call of each per round."""
    for _ in range(warmup):
        fn()
        baseline()
    times, base = [], []
    for _ in range(repeats):
        times.append(timed_ms(fn))
        base.append(timed_ms(baseline))
    return statistics.median(times), statistics.median(base)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None,
                    help=f"comma-separated subset of: {','.join(ALL)}")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eigsh-repeats", type=int, default=None,
                    help="repeats for eigsh_top10 (default: max(3, repeats // 10))")
    ap.add_argument("--serve-grad", action="store_true",
                    help="per stdin line k, time k gradient steps and print their ms")
    args = ap.parse_args()
    wanted = ALL if args.only is None else [q.strip() for q in args.only.split(",") if q]
    unknown = [q for q in wanted if q not in ALL]
    if unknown:
        ap.error(f"unknown quantities {unknown}; choose from {ALL}")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    X = torch.randn(BATCH, 784)
    y = torch.randint(0, 10, (BATCH,))
    lossfn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    results, paired_grad = {}, {}
    config = {"spec": SPEC, "batch": BATCH, "dtype": "float32", "loss": "cross_entropy",
              "reduction": "mean", "device": "cpu", "repeats": args.repeats,
              "warmup": args.warmup, "num_params": sum(p.numel() for p in params)}

    # ------------------------------------------------------------ plain step
    def grad_step():
        for p in params:
            p.grad = None
        lossfn(model(X), y).backward()

    if args.serve_grad:
        for _ in range(args.warmup):
            grad_step()
        print("ready", flush=True)
        for line in sys.stdin:
            times = [timed_ms(grad_step) for _ in range(int(line))]
            print(" ".join(f"{t:.6f}" for t in times), flush=True)
        return

    def run(name, fn, repeats=None):
        if name not in wanted:
            return
        try:
            results[name], paired_grad[name] = paired_median_ms(
                fn, grad_step, args.warmup if repeats is None else 1,
                args.repeats if repeats is None else repeats)
            eprint(f"{name}: {results[name]:.3f} ms ({paired_grad[name]:.3f} ms per grad step)")
        except Exception as e:  # report and omit
            eprint(f"{name}: FAILED ({type(e).__name__}: {e})")

    run("grad", grad_step)

    # -------------------------------------------------------------- BackPACK
    if any(q in wanted for q in BACKPACK_QUANTITIES):
        try:
            from backpack import backpack, extend
            from backpack.extensions import (KFAC, KFLR, BatchGrad, BatchL2Grad,
                                             DiagGGNExact, DiagGGNMC, DiagHessian,
                                             SumGradSquared, Variance)

            config["backpack_version"] = pkg_version("backpack-for-pytorch")
            bmodel = extend(copy.deepcopy(model))
            blossfn = extend(nn.CrossEntropyLoss())
            bparams = list(bmodel.parameters())
            exts = {
                "batch_grad": BatchGrad, "batch_l2": BatchL2Grad,
                "sum_grad_squared": SumGradSquared, "variance": Variance,
                "diag_ggn_mc": lambda: DiagGGNMC(mc_samples=MC_SAMPLES),
                "diag_ggn_exact": DiagGGNExact,
                "kfac": lambda: KFAC(mc_samples=MC_SAMPLES), "kflr": KFLR,
                "diag_hessian": DiagHessian,
            }
            for q in BACKPACK_QUANTITIES:
                ext = exts[q]()

                def step(ext=ext):
                    for p in bparams:
                        p.grad = None
                    with backpack(ext):
                        blossfn(bmodel(X), y).backward()

                run(q, step)
        except Exception as e:
            eprint(f"backpack: FAILED ({type(e).__name__}: {e})")

    # ------------------------------------------------------------ curvlinops
    if any(q in wanted for q in CURVLINOPS_QUANTITIES):
        try:
            from curvlinops import (EFLinearOperator, FisherMCLinearOperator,
                                    GGNLinearOperator, HessianLinearOperator)

            config["curvlinops_version"] = pkg_version("curvlinops-for-pytorch")
            data = [(X, y)]
            kw = dict(check_deterministic=False, progressbar=False)
            ops = {}
            if "hvp" in wanted or "eigsh_top10" in wanted:
                ops["hvp"] = HessianLinearOperator(model, lossfn, params, data, **kw)
            if "ggnvp" in wanted:
                ops["ggnvp"] = GGNLinearOperator(model, lossfn, params, data, **kw)
            if "efvp" in wanted:
                ops["efvp"] = EFLinearOperator(model, lossfn, params, data, **kw)
            if "fishervp" in wanted:
                ops["fishervp"] = FisherMCLinearOperator(model, lossfn, params, data,
                                                         mc_samples=MC_SAMPLES, **kw)
            v = torch.randn(sum(p.numel() for p in params))
            for q in ["hvp", "ggnvp", "efvp", "fishervp"]:
                if q in ops:
                    run(q, lambda op=ops[q]: op @ v)
            if "eigsh_top10" in wanted:
                try:
                    import numpy as np
                    from scipy.sparse.linalg import eigsh

                    from scipy.sparse.linalg import LinearOperator

                    Hs = ops["hvp"].to_scipy()
                    count = [0]

                    def matvec(x):
                        count[0] += 1
                        return Hs.matvec(x)

                    H = LinearOperator(Hs.shape, matvec=matvec, dtype=np.float32)
                    v0 = np.random.default_rng(0).standard_normal(H.shape[0]).astype(np.float32)
                    rep = args.eigsh_repeats or max(3, args.repeats // 10)
                    eig = {}

                    def top10():
                        count[0] = 0
                        w = eigsh(H, k=10, which="LA", v0=v0, return_eigenvectors=False)
                        eig["values"] = sorted(w.tolist(), reverse=True)
                        eig["matvecs"] = count[0]

                    run("eigsh_top10", top10, rep)
                    config["eigsh"] = {"k": 10, "which": "LA", "v0": "seeded normal, float32",
                                       "return_eigenvectors": False, "repeats": rep,
                                       "warmup": 1, **eig}
                except ImportError as e:
                    eprint(f"eigsh_top10: FAILED (scipy missing: {e})")
        except Exception as e:
            eprint(f"curvlinops: FAILED ({type(e).__name__}: {e})")

    out = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "median_ms": {q: round(results[q], 4) for q in ALL if q in results},
        "paired_grad_ms": {q: round(paired_grad[q], 4) for q in ALL if q in paired_grad},
        "config": config,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
