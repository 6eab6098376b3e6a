#!/usr/bin/env python3
"""PyTorch / BackPACK / curvlinops timing baseline for secondo.

``--problem`` picks the model and data (the spec strings are in ``PROBLEMS`` below and in
``problems.json`` beside this script):

- ``mlp`` (default): ``linear(784,256),relu,linear(256,256),relu,linear(256,10)``, batch 128,
  labels ``torch.randint(0, 10)``;
- ``2c2d``: the DeepOBS MNIST 2c2d CNN on 1x28x28, batch 128;
- ``3c3d``: the DeepOBS CIFAR-10 3c3d CNN on 3x32x32, batch 64;
- ``resnet``: a CIFAR ResNet-20 (BatchNorm2d, projection shortcuts) on 3x32x32, batch 64.

The CNN problems use labels ``i % 10``. All of them: inputs standard normal, float32,
cross-entropy (mean), seed 0, CPU, torch's default thread count. Every quantity is
run ``--warmup`` times untimed, then ``--repeats`` times, each time followed by a plain
gradient step (timed too: the machine's speed drifts, and a ratio of medians taken side by
side does not); the median wall times are reported in milliseconds. Output: one JSON
object on stdout::

    {"torch_version": ..., "threads": ..., "median_ms": {"grad": ..., ...},
     "paired_grad_ms": {"hvp": ..., ...}, "config": {...}}

plus, for every problem but ``mlp``, ``"skipped": {row: reason}`` for the rows asked for
that BackPACK cannot compute on that model (or that failed).

Models with BatchNorm (``resnet``): the gradient step (the ``grad`` row, every paired
gradient step and ``--serve-grad``) runs in train mode (batch statistics) unless
``--grad-mode eval``; the BackPACK and curvlinops rows run on an eval-mode copy made
before any step (running statistics: BackPACK refuses BatchNorm in train mode, and
curvlinops' torch.func operators cannot update buffers).

With ``--serve-grad`` it instead reads a count ``k`` per line from stdin, runs ``k`` timed
gradient steps back to back and prints their milliseconds on one line, so that another
program can alternate blocks of its own steps with blocks of these.

Usage::

    .venv/bin/python scripts/reference/bench_torch.py                # everything, mlp
    .venv/bin/python scripts/reference/bench_torch.py --only grad    # plain step only
    .venv/bin/python scripts/reference/bench_torch.py --only grad,hvp --repeats 50
    .venv/bin/python scripts/reference/bench_torch.py --problem 3c3d --repeats 5
    .venv/bin/python scripts/reference/bench_torch.py --problem resnet --serve-grad
    .venv/bin/python scripts/reference/bench_torch.py --write-problems  # problems.json

Quantities that fail are omitted from ``median_ms`` with a message on stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build_model  # noqa: E402


def _resnet20_spec() -> str:
    stem = "conv2d(3,16,k=3,p=1,bias=false),batchnorm2d(16),relu"

    def block(c):
        return (f"residual(conv2d({c},{c},k=3,p=1,bias=false),batchnorm2d({c}),relu,"
                f"conv2d({c},{c},k=3,p=1,bias=false),batchnorm2d({c})),relu")

    def down(a, b):
        return (f"residual(conv2d({a},{b},k=3,s=2,p=1,bias=false),batchnorm2d({b}),relu,"
                f"conv2d({b},{b},k=3,p=1,bias=false),batchnorm2d({b})"
                f"|conv2d({a},{b},k=1,s=2,bias=false),batchnorm2d({b})),relu")

    return ",".join([stem, block(16), block(16), block(16),
                     down(16, 32), block(32), block(32),
                     down(32, 64), block(64), block(64),
                     "adaptiveavgpool2d(1),flatten,linear(64,10)"])


# name -> spec, per-sample input shape, default batch, labels. problems.json holds the same
# (written by --write-problems) so that secondo's side can be checked against these strings.
PROBLEMS = {
    "mlp": {
        "spec": "linear(784,256),relu,linear(256,256),relu,linear(256,10)",
        "input_shape": [784], "batch": 128, "labels": "randint(0,10)",
    },
    "2c2d": {
        "spec": "conv2d(1,32,k=5,p=2),relu,maxpool2d(2),conv2d(32,64,k=5,p=2),relu,"
                "maxpool2d(2),flatten,linear(3136,1024),relu,linear(1024,10)",
        "input_shape": [1, 28, 28], "batch": 128, "labels": "i % 10",
    },
    "3c3d": {
        "spec": "conv2d(3,64,k=5),relu,maxpool2d(3,s=2,p=1),conv2d(64,96,k=3),relu,"
                "maxpool2d(3,s=2,p=1),conv2d(96,128,k=3,p=1),relu,maxpool2d(3,s=2,p=1),"
                "flatten,linear(1152,512),relu,linear(512,256),relu,linear(256,10)",
        "input_shape": [3, 32, 32], "batch": 64, "labels": "i % 10",
    },
    "resnet": {
        "spec": _resnet20_spec(),
        "input_shape": [3, 32, 32], "batch": 64, "labels": "i % 10",
    },
}
PROBLEMS_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "problems.json")

SPEC = PROBLEMS["mlp"]["spec"]
BATCH = PROBLEMS["mlp"]["batch"]
MC_SAMPLES = 1

BACKPACK_QUANTITIES = [
    "batch_grad", "batch_l2", "sum_grad_squared", "variance", "diag_ggn_mc",
    "diag_ggn_exact", "kfac", "kflr", "diag_hessian",
]
CURVLINOPS_QUANTITIES = ["hvp", "ggnvp", "efvp", "fishervp", "eigsh_top10"]
ALL = ["grad"] + BACKPACK_QUANTITIES + CURVLINOPS_QUANTITIES

# What BackPACK 1.7.1 has no extension for, per problem (checked: each raises
# NotImplementedError on its first backward pass). These rows are not run.
BACKPACK_UNSUPPORTED = {
    "resnet": {
        "kfac": "BackPACK 1.7.1: no KFAC extension for AdaptiveAvgPool2d (nor BatchNorm2d)",
        "kflr": "BackPACK 1.7.1: no KFLR extension for AdaptiveAvgPool2d (nor BatchNorm2d)",
        "diag_hessian": "BackPACK 1.7.1: no DiagHessian extension for the residual sum "
                        "(SumModule of extend(use_converter=True)) nor BatchNorm2d",
    },
}


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


def has_mode_layers(model: nn.Module) -> bool:
    """Whether the model behaves differently in train and eval mode."""
    return any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
               for m in model.modules())


def has_residual(model: nn.Module) -> bool:
    return any(type(m).__name__ == "Residual" for m in model.modules())


def problems_table() -> dict:
    """PROBLEMS as written to problems.json, with each model's parameter count."""
    out = {}
    for name, p in PROBLEMS.items():
        torch.manual_seed(0)
        model = build_model(p["spec"])
        out[name] = {"spec": p["spec"], "input_shape": p["input_shape"], "batch": p["batch"],
                     "labels": p["labels"],
                     "num_params": sum(q.numel() for q in model.parameters())}
    return out


def check_problems_json():
    """Warn (stderr) when problems.json no longer matches PROBLEMS."""
    try:
        with open(PROBLEMS_JSON) as f:
            stored = json.load(f)
    except OSError:
        return
    for name, p in PROBLEMS.items():
        s = stored.get(name, {})
        if any(s.get(k) != p[k] for k in ("spec", "input_shape", "batch", "labels")):
            eprint(f"warning: {PROBLEMS_JSON} disagrees with PROBLEMS[{name!r}]; "
                   "rerun with --write-problems")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="mlp", choices=list(PROBLEMS),
                    help="model and data (default mlp)")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch size (default per problem: mlp 128, 2c2d 128, "
                         "3c3d 64, resnet 64)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated subset of: {','.join(ALL)}")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eigsh-repeats", type=int, default=None,
                    help="repeats for eigsh_top10 (default: max(3, repeats // 10))")
    ap.add_argument("--eigsh-warmup", type=int, default=1,
                    help="untimed eigsh_top10 calls first (default 1)")
    ap.add_argument("--grad-mode", default="train", choices=["train", "eval"],
                    help="mode of the gradient step on models with BatchNorm/Dropout "
                         "(default train); BackPACK and curvlinops always get eval mode")
    ap.add_argument("--serve-grad", action="store_true",
                    help="per stdin line k, time k gradient steps and print their ms")
    ap.add_argument("--write-problems", action="store_true",
                    help=f"write PROBLEMS to {os.path.basename(PROBLEMS_JSON)} and exit")
    args = ap.parse_args()
    if args.write_problems:
        with open(PROBLEMS_JSON, "w") as f:
            json.dump(problems_table(), f, indent=2)
            f.write("\n")
        eprint(f"wrote {PROBLEMS_JSON}")
        return
    check_problems_json()
    wanted = ALL if args.only is None else [q.strip() for q in args.only.split(",") if q]
    unknown = [q for q in wanted if q not in ALL]
    if unknown:
        ap.error(f"unknown quantities {unknown}; choose from {ALL}")
    problem = PROBLEMS[args.problem]
    batch = problem["batch"] if args.batch is None else args.batch
    if batch < 1:
        ap.error("--batch must be positive")

    torch.manual_seed(0)
    model = build_model(problem["spec"])
    X = torch.randn(batch, *problem["input_shape"])
    if args.problem == "mlp":
        y = torch.randint(0, 10, (batch,))
    else:
        y = torch.arange(batch) % 10
    lossfn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    # BackPACK and curvlinops work on an eval-mode copy taken before any (train-mode)
    # gradient step has touched the running statistics.
    modal = has_mode_layers(model)
    cmodel = copy.deepcopy(model).eval() if modal else model
    if modal and args.grad_mode == "eval":
        model.eval()
    results, paired_grad, skipped = {}, {}, {}
    config = {"spec": problem["spec"], "batch": batch, "dtype": "float32",
              "loss": "cross_entropy", "reduction": "mean", "device": "cpu",
              "repeats": args.repeats, "warmup": args.warmup,
              "num_params": sum(p.numel() for p in params)}
    if args.problem != "mlp":  # the mlp JSON stays as it was
        config = {"problem": args.problem, **config,
                  "input_shape": problem["input_shape"], "labels": problem["labels"],
                  "grad_mode": args.grad_mode if modal else "n/a",
                  "curvature_mode": "eval" if modal else "n/a"}

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

    def run(name, fn, repeats=None, warmup=None):
        if name not in wanted:
            return
        try:
            results[name], paired_grad[name] = paired_median_ms(
                fn, grad_step, args.warmup if warmup is None else warmup,
                args.repeats if repeats is None else repeats)
            eprint(f"{name}: {results[name]:.3f} ms ({paired_grad[name]:.3f} ms per grad step)")
        except Exception as e:  # report and omit
            eprint(f"{name}: FAILED ({type(e).__name__}: {e})")
            skipped[name] = f"failed: {type(e).__name__}: {e}"

    run("grad", grad_step)

    # -------------------------------------------------------------- BackPACK
    unsupported = BACKPACK_UNSUPPORTED.get(args.problem, {})
    for q in BACKPACK_QUANTITIES:
        if q in wanted and q in unsupported:
            skipped[q] = unsupported[q]
            eprint(f"{q}: skipped ({unsupported[q]})")
    if any(q in wanted and q not in unsupported for q in BACKPACK_QUANTITIES):
        try:
            from backpack import backpack, extend
            from backpack.extensions import (KFAC, KFLR, BatchGrad, BatchL2Grad,
                                             DiagGGNExact, DiagGGNMC, DiagHessian,
                                             SumGradSquared, Variance)

            config["backpack_version"] = pkg_version("backpack-for-pytorch")
            # Residual blocks are not BackPACK modules: its torch.fx converter rewrites
            # the model with BackPACK's branching and SumModule.
            converter = has_residual(cmodel)
            if converter:
                config["backpack_converter"] = True
            bmodel = extend(copy.deepcopy(cmodel), use_converter=converter)
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
                if q in unsupported:
                    continue
                ext = exts[q]()

                def step(ext=ext):
                    for p in bparams:
                        p.grad = None
                    with backpack(ext):
                        blossfn(bmodel(X), y).backward()

                run(q, step)
        except Exception as e:
            eprint(f"backpack: FAILED ({type(e).__name__}: {e})")
            for q in BACKPACK_QUANTITIES:
                if q in wanted and q not in results and q not in skipped:
                    skipped[q] = f"failed: {type(e).__name__}: {e}"

    # ------------------------------------------------------------ curvlinops
    if any(q in wanted for q in CURVLINOPS_QUANTITIES):
        try:
            from curvlinops import (EFLinearOperator, FisherMCLinearOperator,
                                    GGNLinearOperator, HessianLinearOperator)

            config["curvlinops_version"] = pkg_version("curvlinops-for-pytorch")
            cparams = list(cmodel.parameters())
            data = [(X, y)]
            kw = dict(check_deterministic=False, progressbar=False)
            ops = {}
            if "hvp" in wanted or "eigsh_top10" in wanted:
                ops["hvp"] = HessianLinearOperator(cmodel, lossfn, cparams, data, **kw)
            if "ggnvp" in wanted:
                ops["ggnvp"] = GGNLinearOperator(cmodel, lossfn, cparams, data, **kw)
            if "efvp" in wanted:
                ops["efvp"] = EFLinearOperator(cmodel, lossfn, cparams, data, **kw)
            if "fishervp" in wanted:
                ops["fishervp"] = FisherMCLinearOperator(cmodel, lossfn, cparams, data,
                                                         mc_samples=MC_SAMPLES, **kw)
            v = torch.randn(sum(p.numel() for p in cparams))
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

                    run("eigsh_top10", top10, rep, args.eigsh_warmup)
                    config["eigsh"] = {"k": 10, "which": "LA", "v0": "seeded normal, float32",
                                       "return_eigenvectors": False, "repeats": rep,
                                       "warmup": args.eigsh_warmup, **eig}
                except ImportError as e:
                    eprint(f"eigsh_top10: FAILED (scipy missing: {e})")
                    skipped["eigsh_top10"] = f"failed: scipy missing: {e}"
        except Exception as e:
            eprint(f"curvlinops: FAILED ({type(e).__name__}: {e})")
            for q in CURVLINOPS_QUANTITIES:
                if q in wanted and q not in results and q not in skipped:
                    skipped[q] = f"failed: {type(e).__name__}: {e}"

    out = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "median_ms": {q: round(results[q], 4) for q in ALL if q in results},
        "paired_grad_ms": {q: round(paired_grad[q], 4) for q in ALL if q in paired_grad},
        "config": config,
    }
    if args.problem != "mlp":
        out["skipped"] = {q: skipped[q] for q in ALL if q in skipped}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
