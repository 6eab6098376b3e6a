"""kfac-jax 0.0.8 (jax 0.9.1) training the digits autoencoder, the reference row of
``secondo bench --optimizers``.

The network is the issue's deep autoencoder 64-256-128-64-16-64-128-256-64 (tanh, MSE
mean over all N·64 elements), batch 256, 2,000 steps, trained by kfac-jax's Optimizer
with its adaptive learning rate, momentum and damping (Martens & Grosse's quadratic
model and Levenberg–Marquardt rule), inverses every 5 steps, in float32 on the CPU.

``--data FILE`` (what ``secondo bench --optimizers`` writes) holds the training split
``x``, the test split ``test_x``, the initial weights ``param/<name>`` (PyTorch layout
``[out, in]``) and the sample order of every epoch ``order`` ``[epochs, N]``, with the
spec, batch size, steps, target loss and evaluation interval as metadata: kfac-jax then
trains from secondo's initial weights on secondo's batches (each epoch cut into
batches of ``batch``, the last one shorter). Without ``--data`` the script makes its
own: the digits of ``crates/data/assets/digits.csv.gz`` scaled to [0, 1], an 80/20
split, per-epoch shuffles and PyTorch's default init, all from numpy's seed 0, so the
same problem but not secondo's weights and batches.

Timing: every step is timed to ``block_until_ready``; after every 4th step a plain
jitted gradient step (value_and_grad and an SGD update of its own copy of the weights,
on the same batch) is timed too, as secondo times its SGD baseline. Steps that compiled
(the first of each batch shape and each of kfac-jax's two static variants: with and
without the damping update every 5th step) are left out of the statistics and count
as the median step of their kind in the elapsed seconds. The full-data training loss is
evaluated every ``eval_every`` steps, untimed.

Output: one JSON object on stdout, progress on stderr:

    {"versions": {...}, "config": {...}, "steps_to_target": 150,
     "seconds_to_target": 2.3, "train_loss_at": {"150": ..., "500": ...},
     "final_train_loss": ..., "test_loss": ..., "ms_per_step": 13.0,
     "ms_inverse_step": 20.0, "ms_other_step": 12.0, "grad_step_ms": 2.1,
     "cost_in_grad_steps": 6.3, "compile_steps": 4,
     "curve": {"steps": [...], "seconds": [...], "train_loss": [...]}}

Run: ``.venv/bin/python scripts/reference/bench_kfac_jax.py [--data FILE] [--steps N]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import sys
import time
from importlib.metadata import version

import jax

jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402
import kfac_jax  # noqa: E402
import numpy as np  # noqa: E402

SPEC = ",tanh,".join(
    f"linear({a},{b})" for a, b in zip([64, 256, 128, 64, 16, 64, 128, 256],
                                        [256, 128, 64, 16, 64, 128, 256, 64]))
DIGITS = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "data", "assets",
                      "digits.csv.gz")
# As secondo's bench: a baseline step after every 4th step, blocks of 20 steps.
PAIR_EVERY = 4
BLOCK = 20
BASELINE_LR = 1e-3
REPORT_AT = (150, 500, 1000, 2000)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def layers_of(spec: str):
    """``linear(a,b)`` and ``tanh`` layers as (kind, index, in, out)."""
    out = []
    for i, tok in enumerate(re.findall(r"[a-z]+(?:\([^)]*\))?", spec)):
        m = re.fullmatch(r"linear\((\d+),(\d+)\)", tok)
        if m:
            out.append(("linear", i, int(m.group(1)), int(m.group(2))))
        elif tok == "tanh":
            out.append(("tanh", i, 0, 0))
        else:
            raise SystemExit(f"bench_kfac_jax.py: unsupported layer {tok!r} in {spec!r}")
    return out


def forward(layers, p, x):
    h = x
    for kind, i, _, _ in layers:
        if kind == "linear":
            h = h @ p[f"{i}.weight"] + p[f"{i}.bias"]
        else:
            h = jnp.tanh(h)
    return h


def load_data(args):
    """(train x, test x, initial weights in PyTorch layout, epoch orders, metadata)."""
    if args.data:
        from safetensors.numpy import load_file
        from safetensors import safe_open

        t = load_file(args.data)
        with safe_open(args.data, "np") as fh:
            meta = fh.metadata()
        params = {k[len("param/"):]: v for k, v in t.items() if k.startswith("param/")}
        order = t["order"].astype(np.int64)
        return t["x"], t["test_x"], params, order, meta
    rows = []
    with gzip.open(DIGITS, "rt") as fh:
        for line in fh:
            rows.append([float(v) / 16.0 for v in line.strip().split(",")[:64]])
    x = np.asarray(rows, dtype=np.float32)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    n_test = math.ceil(0.2 * len(x))
    test_x, train_x = x[perm[:n_test]], x[perm[n_test:]]
    params = {}
    for kind, i, fan_in, fan_out in layers_of(SPEC):
        if kind == "linear":
            bound = 1.0 / math.sqrt(fan_in)
            params[f"{i}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
            params[f"{i}.bias"] = rng.uniform(-bound, bound, fan_out).astype(np.float32)
    per_epoch = math.ceil(len(train_x) / args.batch)
    epochs = math.ceil(args.steps / per_epoch)
    order = np.stack([rng.permutation(len(train_x)) for _ in range(epochs)])
    meta = {"spec": SPEC, "batch": str(args.batch), "steps": str(args.steps),
            "target": str(args.target), "eval_every": str(max(args.steps // 200, 1)),
            "source": "digits.csv.gz, numpy seed 0 (not secondo's batches)"}
    return train_x, test_x, params, order, meta


def batches(x, order, batch, steps):
    """The first `steps` batches: each epoch's order cut into runs of `batch`."""
    count = 0
    for perm in order:
        for start in range(0, len(perm), batch):
            yield x[perm[start:start + batch]]
            count += 1
            if count == steps:
                return
    raise SystemExit(f"bench_kfac_jax.py: the data's order holds only {count} batches")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="secondo's problem (written by secondo bench --optimizers)")
    ap.add_argument("--steps", type=int, help="steps (default: the data's, else 2000)")
    ap.add_argument("--batch", type=int, default=256, help="batch size without --data")
    ap.add_argument("--target", type=float, default=0.005, help="target loss without --data")
    ap.add_argument("--initial-damping", type=float, default=1.0,
                    help="kfac-jax's initial_damping (secondo's --adapt-damping starts at 1)")
    ap.add_argument("--inverse-every", type=int, default=5)
    ap.add_argument("--estimation-mode", default="ggn_curvature_prop",
                    help="kfac-jax's estimation_mode (its default)")
    args = ap.parse_args()
    if args.steps is None and not args.data:
        args.steps = 2000
    x, test_x, params_torch, order, meta = load_data(args)
    spec = meta["spec"]
    batch = int(meta["batch"])
    steps = args.steps or int(meta["steps"])
    target = float(meta["target"])
    eval_every = int(meta["eval_every"])
    layers = layers_of(spec)
    width = x.shape[1]

    def loss_fn(p, xb):
        f = forward(layers, p, xb)
        kfac_jax.register_squared_error_loss(f, xb, weight=1.0 / width)
        return jnp.mean((f - xb) ** 2)

    def to_jax(tree):
        return {k: jnp.asarray(v.T if k.endswith("weight") else v) for k, v in tree.items()}

    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn),
        l2_reg=0.0,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        use_adaptive_damping=True,
        initial_damping=args.initial_damping,
        inverse_update_period=args.inverse_every,
        estimation_mode=args.estimation_mode,
        num_burnin_steps=0,
        multi_device=False,
    )
    plain_loss = jax.jit(lambda p, xb: jnp.mean((forward(layers, p, xb) - xb) ** 2))

    @jax.jit
    def grad_step(p, xb):
        _, g = jax.value_and_grad(plain_loss)(p, xb)
        return jax.tree_util.tree_map(lambda a, b: a - BASELINE_LR * b, p, g)

    full_x, full_test = jnp.asarray(x), jnp.asarray(test_x)
    params = to_jax(params_torch)
    baseline = to_jax(params_torch)
    key = jax.random.PRNGKey(0)
    data = list(batches(x, order, batch, steps))
    state = opt.init(params, key, jnp.asarray(data[0]))
    curve_steps, curve_loss = [0], [float(plain_loss(params, full_x))]
    own, kinds, compiled, base = [], [], [], []
    seen = set()
    for step, xb in enumerate(data):
        xb = jnp.asarray(xb)
        kind = "inverse" if step % args.inverse_every == 0 else "other"
        variant = (xb.shape[0], (step + 1) % 5 == 0)
        if step == 0:
            jax.block_until_ready(grad_step(baseline, xb))
        t0 = time.perf_counter()
        params, state, stats = opt.step(params, state, jax.random.fold_in(key, step), batch=xb)
        jax.block_until_ready(params)
        own.append(time.perf_counter() - t0)
        kinds.append(kind)
        compiled.append(variant not in seen)
        seen.add(variant)
        if step % PAIR_EVERY == 0:
            t0 = time.perf_counter()
            baseline = jax.block_until_ready(grad_step(baseline, xb))
            base.append((step, time.perf_counter() - t0, (xb.shape[0], "grad") not in seen))
            seen.add((xb.shape[0], "grad"))
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve_steps.append(step + 1)
            curve_loss.append(float(plain_loss(params, full_x)))
        if (step + 1) % 500 == 0:
            log(f"kfac-jax: step {step + 1}, train loss {curve_loss[-1]:.5f}")

    def median(v):
        return float(np.median(v)) if len(v) else float("nan")

    steady = {k: [t for t, kk, c in zip(own, kinds, compiled) if kk == k and not c]
              for k in ("inverse", "other")}
    typical = {k: median(v) for k, v in steady.items()}
    charged = [typical[k] if c else t for t, k, c in zip(own, kinds, compiled)]
    elapsed = np.cumsum(charged)
    seconds = [0.0] + [float(elapsed[s - 1]) for s in curve_steps[1:]]
    reached = next(((s, t) for s, t, l in zip(curve_steps, seconds, curve_loss) if l <= target),
                   None)
    ratios = []
    for start in range(0, len(own), BLOCK):
        r = range(start, min(start + BLOCK, len(own)))
        b = [t for s, t, c in base if s in r and not c]
        o = [own[i] for i in r if not compiled[i]]
        if b and o:
            ratios.append(np.mean(o) / np.mean(b))
    kept = [t for t, c in zip(own, compiled) if not c]
    result = {
        "versions": {"kfac_jax": version("kfac-jax"), "jax": jax.__version__,
                     "jaxlib": version("jaxlib"), "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "config": {"spec": spec, "batch": batch, "steps": steps, "target": target,
                   "eval_every": eval_every, "dtype": "float32",
                   "estimation_mode": args.estimation_mode,
                   "initial_damping": args.initial_damping,
                   "inverse_every": args.inverse_every, "curvature_ema": 0.95,
                   "damping_adaptation_interval": 5, "num_burnin_steps": 0,
                   "adaptive": "learning rate, momentum, damping",
                   "data": meta.get("source", "secondo bench --optimizers"),
                   "threads": os.cpu_count()},
        "steps_to_target": reached[0] if reached else None,
        "seconds_to_target": reached[1] if reached else None,
        "train_loss_at": {str(s): l for s, l in zip(curve_steps, curve_loss) if s in REPORT_AT},
        "final_train_loss": curve_loss[-1],
        "test_loss": float(plain_loss(params, full_test)),
        "ms_per_step": 1e3 * float(np.mean(kept)),
        "ms_inverse_step": 1e3 * typical["inverse"],
        "ms_other_step": 1e3 * typical["other"],
        "grad_step_ms": 1e3 * median([t for _, t, c in base if not c]),
        "cost_in_grad_steps": median(ratios),
        "compile_steps": int(sum(compiled)),
        "curve": {"steps": curve_steps, "seconds": seconds, "train_loss": curve_loss},
    }
    if not all(math.isfinite(l) for l in curve_loss):
        result["failed"] = "non-finite training loss"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
