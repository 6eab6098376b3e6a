"""Reference fixtures for secondo's KFAC optimizer, from kfac-jax 0.0.8 (jax 0.9.1).

Writes ``tests/fixtures/kfac_jax/<case>.safetensors``: a small tanh MLP with MSE (mean
over all N·C elements, secondo's and PyTorch's ``mse``), its initial parameters
``param/<name>`` (PyTorch layout, ``[out, in]``), the batch ``x``, ``y`` (the same batch
every step), and after every step ``k`` (1-based):

* ``step<k>/param/<name>``: kfac-jax's parameters after the step;
* ``step<k>/factor/<name>/in``, ``step<k>/factor/<name>/out``: the Kronecker factors
  the step's preconditioner was built from (kfac-jax's moving averages at the last
  inverse update, its input factor ``A`` and output factor ``B``; a layer with a bias
  has one block, ``A`` over ``[a; 1]``, stored under the weight's name);
* ``step<k>/loss``: the loss before the step; with the adaptive learning rate and
  momentum also ``step<k>/damping`` (the damping of the step), ``step<k>/lr`` and
  ``step<k>/momentum`` (the coefficients kfac-jax chose).

kfac-jax runs with ``estimation_mode="ggn_exact"`` (deterministic: it loops over the
output dimensions instead of drawing Rademacher vectors as "ggn_curvature_prop" does;
for MSE the GGN is KFLR's curvature), ``register_squared_error_loss(f, y, weight=1/C)``
(kfac-jax's squared error is ``weight · Σ (f − y)² / N``, so ``1/C`` gives the mean over
N·C), ``l2_reg=0``, ``num_burnin_steps=0``, ``precon_damping_mult=1``, factored
(pi-adjusted) Tikhonov damping (``use_exact_inverses=False``) and no per-block norm
(``norm_to_scale_identity_weight_per_block=None``). See scripts/reference/README.md,
section 5, for the conventions and how the Rust test maps them onto secondo.

Before a file is written, every step is recomputed densely in numpy from the formulas
the README states (factors from per-sample Jacobians, π-adjusted damping, the moving
average, KL-clipping, momentum, the 2 × 2 quadratic model over the exact GGN), and the
script aborts if kfac-jax disagrees.

Run: ``.venv/bin/python scripts/reference/make_kfac_jax_fixtures.py`` (about a minute).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

import jax.numpy as jnp  # noqa: E402
import kfac_jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import make_case, name_seed  # noqa: E402
from make_fixtures import write  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "kfac_jax")

# Agreement demanded between kfac-jax and the dense numpy recomputation.
TOL = 1e-11

NOBIAS = "linear(6,8,bias=false),tanh,linear(8,5,bias=false),tanh,linear(5,4,bias=false)"
BIAS = "linear(6,8),tanh,linear(8,5),tanh,linear(5,4)"

# name, spec, steps, settings. `ema` is kfac-jax's curvature_ema; `inverse_every` its
# inverse_update_period; `kl` its norm_constraint; `adaptive`: kfac-jax's adaptive
# learning rate and momentum, its damping set every step by secondo's
# Levenberg–Marquardt rule (see `lm_damping`).
CASES = [
    ("nobias_plain", NOBIAS, 3,
     dict(lr=0.3, momentum=0.0, damping=1e-2, ema=0.0, inverse_every=1, kl=None)),
    ("nobias_momentum_kl_inverse_every_2", NOBIAS, 3,
     dict(lr=0.5, momentum=0.5, damping=3e-2, ema=0.0, inverse_every=2, kl=1e-3)),
    ("nobias_ema", NOBIAS, 2,
     dict(lr=0.3, momentum=0.0, damping=1e-2, ema=0.5, inverse_every=1, kl=None)),
    ("nobias_adaptive", NOBIAS, 3,
     dict(lr=None, momentum=None, damping=1.0, ema=0.0, inverse_every=1, kl=None,
          adaptive=True)),
    ("bias_plain", BIAS, 2,
     dict(lr=0.3, momentum=0.0, damping=1e-2, ema=0.0, inverse_every=1, kl=None)),
]
N = 10


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------- the network


def layers_of(model: torch.nn.Sequential):
    """(kind, torch name) per module: ``linear`` with its index, or ``tanh``."""
    out = []
    for i, m in enumerate(model):
        if isinstance(m, torch.nn.Linear):
            out.append(("linear", str(i), m.bias is not None))
        elif isinstance(m, torch.nn.Tanh):
            out.append(("tanh", str(i), False))
        else:
            raise ValueError(f"unsupported module {m}")
    return out


def to_jax(model: torch.nn.Sequential):
    """kfac-jax's parameters: ``W`` as ``[in, out]`` (``x @ W``), biases ``[out]``."""
    p = {}
    for name, t in model.state_dict().items():
        a = jnp.asarray(t.detach().numpy())
        p[name] = a.T if name.endswith("weight") else a
    return p


def to_torch_layout(p):
    return {k: np.asarray(v).T if k.endswith("weight") else np.asarray(v) for k, v in p.items()}


def forward(layers, p, x, taps=None):
    """The network's output; `taps` collects each linear layer's input."""
    h = x
    for kind, i, bias in layers:
        if kind == "linear":
            if taps is not None:
                taps.append(h)
            h = h @ p[f"{i}.weight"]
            if bias:
                h = h + p[f"{i}.bias"]
        else:
            h = jnp.tanh(h)
    return h


def make_loss(layers):
    def loss_fn(p, batch):
        x, y = batch
        f = forward(layers, p, x)
        kfac_jax.register_squared_error_loss(f, y, weight=1.0 / y.shape[1])
        return jnp.mean((f - y) ** 2)

    return loss_fn


# ------------------------------------------------------- the dense recomputation


def batch_factors(layers, p, x):
    """Per linear layer (by index): ``A = (1/N) Σ a aᵀ`` (over ``[a; 1]`` with a bias)
    and ``B = Σ_n J_nᵀ (2/(N·C)) J_n``, J_n the Jacobian of sample n's output with
    respect to the layer's pre-activation, by jax.jacrev."""
    taps = []
    out = forward(layers, p, x, taps)
    n, c = out.shape
    linear = [l for l in layers if l[0] == "linear"]
    factors = {}
    for k, (kind, i, bias) in enumerate(linear):
        a = np.asarray(taps[k])
        if bias:
            a = np.concatenate([a, np.ones((n, 1))], axis=1)
        start = [j for j, l in enumerate(layers) if l[1] == i][0]

        def from_pre(z, rest=layers[start + 1:]):
            # z is this layer's output already: the network from there on.
            return forward(rest, p, z)

        z = np.asarray(taps[k]) @ np.asarray(p[f"{i}.weight"])
        if bias:
            z = z + np.asarray(p[f"{i}.bias"])
        jac = np.asarray(jax.vmap(jax.jacrev(from_pre))(jnp.asarray(z)))  # [N, C, out]
        b = np.einsum("nco,ncp->op", jac, jac) * 2.0 / (n * c)
        factors[i] = (a.T @ a / n, b)
    return factors


def pi_inverse(a, b, damping):
    """kfac-jax's (and Martens & Grosse's) factored Tikhonov damping:
    ``(A + π√λ I)⁻¹`` and ``(B + √λ/π I)⁻¹`` with ``π² = (tr A/dim A)/(tr B/dim B)``."""
    pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(b) / len(b)))
    r = np.sqrt(damping)
    return (np.linalg.inv(a + pi * r * np.eye(len(a))),
            np.linalg.inv(b + r / pi * np.eye(len(b))))


def precondition(layers, inverses, g):
    """Each layer's ``A⁻¹ G B⁻¹`` in kfac-jax's ``[in, out]`` layout (``[W; b]`` stacked)."""
    out = {}
    for kind, i, bias in layers:
        if kind != "linear":
            continue
        ainv, binv = inverses[i]
        gw = np.asarray(g[f"{i}.weight"])
        if bias:
            gw = np.concatenate([gw, np.asarray(g[f"{i}.bias"])[None, :]], axis=0)
        pg = ainv @ gw @ binv
        if bias:
            out[f"{i}.weight"], out[f"{i}.bias"] = pg[:-1], pg[-1]
        else:
            out[f"{i}.weight"] = pg
    return out


def dense_ggn(layers, p, x):
    """The exact GGN of the loss over the flat parameters: ``Σ_n J_nᵀ (2/(N·C)) J_n``."""
    flat, unravel = ravel_pytree(p)
    jac = np.asarray(jax.jacfwd(lambda v: forward(layers, unravel(v), x))(flat))
    n, c = jac.shape[:2]
    j = jac.reshape(n * c, -1)
    return j.T @ j * 2.0 / (n * c)


def reference_run(layers, p0, x, y, steps, s, dampings):
    """The steps recomputed from the README's formulas; returns the parameters after
    each step and the (learning rate, momentum) of each: the adaptive ones, or the fixed
    learning rate times the KL-clipping factor."""
    loss_fn = make_loss(layers)
    p = {k: np.asarray(v) for k, v in p0.items()}
    names = sorted(p)
    avg, weight = None, 0.0
    inverses = None
    velocity = {k: np.zeros_like(v) for k, v in p.items()}
    history, coefficients = [], []
    for t in range(steps):
        damping = dampings[t]
        new = batch_factors(layers, {k: jnp.asarray(v) for k, v in p.items()}, x)
        # kfac-jax's normalized moving average: weights d^(t-j), divided by their sum.
        d = s["ema"]
        if avg is None:
            avg, weight = {k: (a, b) for k, (a, b) in new.items()}, 1.0
        else:
            w_new = d * weight + 1.0
            avg = {k: ((d * weight * avg[k][0] + new[k][0]) / w_new,
                       (d * weight * avg[k][1] + new[k][1]) / w_new) for k in new}
            weight = w_new
        if t % s["inverse_every"] == 0:
            inverses = {k: pi_inverse(a, b, damping) for k, (a, b) in avg.items()}
        g = jax.grad(loss_fn)({k: jnp.asarray(v) for k, v in p.items()}, (x, y))
        g = {k: np.asarray(v) for k, v in g.items()}
        pg = precondition(layers, inverses, g)
        flat = lambda tree: np.concatenate([np.ravel(tree[k]) for k in names])  # noqa: E731
        if s.get("adaptive"):
            c = dense_ggn(layers, {k: jnp.asarray(v) for k, v in p.items()}, x)
            vs = [flat(pg), flat(velocity)]
            gf = flat(g)
            a = np.array([[u @ c @ v + damping * (u @ v) for v in vs] for u in vs])
            bvec = np.array([gf @ v for v in vs])
            if t == 0:
                w = np.array([-bvec[0] / a[0, 0], 0.0])
            else:
                w = -np.linalg.solve(a, bvec)
            coefficients.append((-w[0], w[1]))
            delta = {k: w[0] * pg[k] + w[1] * velocity[k] for k in names}
        else:
            lr, mom = s["lr"], s["momentum"]
            nu = 1.0
            if s["kl"] is not None:
                q = lr * lr * (flat(pg) @ flat(g))
                nu = min(1.0, np.sqrt(s["kl"] / q))
            coefficients.append((lr * nu, mom))
            delta = {k: -lr * nu * pg[k] + mom * velocity[k] for k in names}
        p = {k: p[k] + delta[k] for k in names}
        velocity = delta
        history.append((p, avg if t % s["inverse_every"] == 0 else None))
    return history, coefficients


def lm_damping(damping, rho):
    """secondo's Levenberg–Marquardt rule (src/second_order/damping.rs): ×3/2 below
    ρ = 1/4, ×2/3 above 3/4, within [1e-8, 1e8]."""
    if rho < 0.25:
        return min(damping * 1.5, 1e8)
    if rho > 0.75:
        return max(damping / 1.5, 1e-8)
    return damping


# ------------------------------------------------------------------------ kfac-jax


def kfac_run(layers, p0, x, y, steps, s):
    loss_fn = make_loss(layers)
    adaptive = bool(s.get("adaptive"))
    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn),
        l2_reg=0.0,
        use_adaptive_learning_rate=adaptive,
        use_adaptive_momentum=adaptive,
        estimation_mode="ggn_exact",
        curvature_ema=s["ema"],
        inverse_update_period=s["inverse_every"],
        num_burnin_steps=0,
        norm_constraint=s["kl"],
        multi_device=False,
    )
    batch = (x, y)
    key = jax.random.PRNGKey(0)
    # kfac-jax donates the parameters it is given: it gets fresh copies, the records numpy.
    fresh = lambda tree: {k: jnp.array(np.asarray(v)) for k, v in tree.items()}  # noqa: E731
    state = opt.init(fresh(p0), key, batch)
    est = opt._estimator
    index_of = {i: name for i, name in enumerate(sorted(p0))}  # leaves of a dict: sorted keys
    p = {k: np.asarray(v) for k, v in p0.items()}
    damping = s["damping"]
    out = []
    for t in range(steps):
        kwargs = dict(damping=jnp.asarray(damping))
        if not adaptive:
            kwargs.update(learning_rate=jnp.asarray(s["lr"]), momentum=jnp.asarray(s["momentum"]))
        p_new, state, stats = opt.step(fresh(p), state, key, batch=batch, **kwargs)
        p_new = {k: np.asarray(v) for k, v in p_new.items()}
        factors = {}
        for indices, block_state in zip(est.jaxpr.layer_indices, state.estimator_state.blocks_states):
            weight = [index_of[j] for j in indices if index_of[j].endswith("weight")][0]
            a, b = (np.asarray(f.value) for f in block_state.factors)
            factors[weight] = (a, b)
        record = dict(params=p_new, factors=factors, loss=float(stats["loss"]), damping=damping,
                      lr=float(stats["learning_rate"]), momentum=float(stats["momentum"]))
        if adaptive:
            new_loss = float(loss_fn(fresh(p_new), batch))
            rho = (new_loss - record["loss"]) / float(stats["quad_model_change"])
            if not new_loss < record["loss"]:
                raise SystemExit(f"step {t}: the loss rose; secondo would reject the step")
            damping = lm_damping(damping, rho)
        out.append(record)
        p = p_new
    return out


# ----------------------------------------------------------------------------- main


def check_close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)
    if not err < TOL:
        raise SystemExit(f"{what}: kfac-jax and the dense recomputation differ by {err:.2e}")
    return err


def make(name, spec, steps, s):
    model, x_t, y_t = make_case(spec, "mse", N, torch.float64, name_seed(name))
    layers = layers_of(model)
    p0 = to_jax(model)
    x, y = jnp.asarray(x_t.numpy()), jnp.asarray(y_t.numpy())
    runs = kfac_run(layers, p0, x, y, steps, s)
    dampings = [r["damping"] for r in runs]
    ref, coefficients = reference_run(layers, p0, x, y, steps, s, dampings)
    worst = 0.0
    tensors = {"x": x_t, "y": y_t}
    tensors.update({f"param/{k}": torch.from_numpy(np.ascontiguousarray(v))
                    for k, v in to_torch_layout(p0).items()})
    refreshed = None
    for t, (run, (ref_p, ref_f)) in enumerate(zip(runs, ref)):
        k = t + 1
        for pname in p0:
            worst = max(worst, check_close(run["params"][pname], ref_p[pname], f"{name} step {k} {pname}"))
        if ref_f is not None:
            refreshed = run["factors"]
            for lname, (a, b) in ref_f.items():
                worst = max(worst, check_close(refreshed[f"{lname}.weight"][0], a, f"{name} A {lname}"))
                worst = max(worst, check_close(refreshed[f"{lname}.weight"][1], b, f"{name} B {lname}"))
        for pname, v in to_torch_layout(run["params"]).items():
            tensors[f"step{k}/param/{pname}"] = torch.from_numpy(np.ascontiguousarray(v))
        for wname, (a, b) in refreshed.items():
            tensors[f"step{k}/factor/{wname}/in"] = torch.from_numpy(np.ascontiguousarray(a))
            tensors[f"step{k}/factor/{wname}/out"] = torch.from_numpy(np.ascontiguousarray(b))
        tensors[f"step{k}/loss"] = torch.tensor([run["loss"]], dtype=torch.float64)
        if s.get("adaptive"):
            lr, mom = coefficients[t]
            worst = max(worst, check_close(run["lr"], lr, f"{name} step {k} lr"))
            if t > 0:
                worst = max(worst, check_close(run["momentum"], mom, f"{name} step {k} momentum"))
            tensors[f"step{k}/damping"] = torch.tensor([run["damping"]], dtype=torch.float64)
            tensors[f"step{k}/lr"] = torch.tensor([run["lr"]], dtype=torch.float64)
            tensors[f"step{k}/momentum"] = torch.tensor([run["momentum"]], dtype=torch.float64)
    d = s["ema"]
    meta = {
        "spec": spec, "loss": "mse", "reduction": "mean", "dtype": "float64",
        "seed": name_seed(name), "batch_size": N, "num_data": N, "steps": steps,
        "adaptive": str(bool(s.get("adaptive"))).lower(),
        "lr": "adaptive" if s.get("adaptive") else s["lr"],
        "momentum": "adaptive" if s.get("adaptive") else s["momentum"],
        "damping": s["damping"],
        "damping_rule": "secondo-lm" if s.get("adaptive") else "fixed",
        "curvature_ema": d,
        # secondo's EMA weight that gives kfac-jax's normalized average at step 2
        # (exact for up to two steps; equal to 0 for ema 0).
        "secondo_ema": d / (1.0 + d),
        "inverse_every": s["inverse_every"],
        "norm_constraint": "none" if s["kl"] is None else s["kl"],
        "estimation_mode": "ggn_exact",
        "source": "scripts/reference/make_kfac_jax_fixtures.py",
        "kfac_jax_version": version("kfac-jax"), "jax_version": jax.__version__,
        "jaxlib_version": version("jaxlib"), "torch_version": torch.__version__,
        "format": "secondo-fixture-v1",
        "note": "kfac-jax Optimizer steps on one batch; weights in PyTorch layout [out, in]",
    }
    write(os.path.join(OUT, f"{name}.safetensors"), tensors, meta)
    taken = ", ".join(f"{lr:.4g}/{mom:.4g}" for lr, mom in coefficients)
    log(f"{name}: {steps} steps (lr/momentum {taken}), kfac-jax vs dense recomputation {worst:.1e}")


def main():
    torch.set_num_threads(1)
    only = set(sys.argv[1].split(",")) if len(sys.argv) > 1 else None
    for name, spec, steps, s in CASES:
        if only is None or name in only:
            make(name, spec, steps, s)


if __name__ == "__main__":
    main()
