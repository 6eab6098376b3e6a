#!/usr/bin/env python3
"""Regenerate the Cockpit reference fixtures (cockpit-for-pytorch 1.0.2).

Usage (from the repository root)::

    .venv/bin/python scripts/reference/make_cockpit_fixtures.py [--only CASE[,CASE...]]

CASE is one of mlp_sgd, mlp_adam, cnn_sgd. For each case the script trains a small
float64 model for a few steps with every Cockpit quantity tracked at every step and
writes

- ``tests/fixtures/cockpit/<case>.safetensors``: initial parameters ``init/<name>``, the
  parameters before every step ``theta/<step>/<name>`` (``theta/<steps>/*`` is the state
  after the last step), the batches ``x/<step>`` and ``y/<step>``, and string metadata;
- ``tests/fixtures/cockpit/<case>.json``: Cockpit's output per step under secondo's
  instrument names, plus ``hess_max_ev_exact`` from a dense Hessian.

Before anything is written, every value Cockpit produced is checked against an
independent float64 computation (per-sample gradients by a loop over samples, the dense
Hessian from ``torch.func``), and the script aborts on a mismatch.

Cockpit conventions found while writing this (all for mean-reduced cross-entropy,
L = (1/N) Σ_i ℓ_i, G_i = ∇θ ℓ_i the per-sample gradient of the *unscaled* sample loss,
g = ∇L = (1/N) Σ_i G_i, sums over d run over all parameter elements of all parameters):

- BackPACK's BatchGrad stores grad_batch_i = G_i / N. Every Cockpit quantity multiplies
  it by N (``batch_size``) again, so all formulas below are in terms of G_i.
- loss = L (``batch_loss.item()``); grad_norm[p] = ‖g_p‖ per parameter tensor.
- distance[p] at step t = ‖θ_t,p − θ_0,p‖, with θ_t the parameters *before* step t's update
  (Cockpit tracks inside the backward pass, before ``optimizer.step()``), so step 0 has 0.
- update_size[p] at step t = ‖θ_{t+1},p − θ_t,p‖, computed at step t+1 and stored under t;
  the last step has none. Same for alpha.
- norm_test  = sqrt( (Σ_i‖G_i‖² − N‖g‖²)/(N−1) / (N‖g‖²) )
- inner_test = sqrt( (Σ_i (G_iᵀg)² − N‖g‖⁴)/(N−1) / (N‖g‖⁴) )
- ortho_test = sqrt( (Σ_i‖G_i‖² − Σ_i (G_iᵀg)²/‖g‖²)/(N−1) / (N‖g‖²) )
  (ddof=1 sample variances, i.e. 1/(N−1)).
- mean_gsnr  = mean_d g_d² / ((1/N)Σ_i G_id² − g_d² + 1e-5): a *biased* (1/N) variance.
- cabs       = lr · Σ_d (Σ_i G_id² − N g_d²) / (N · L)   (SGD only).
- early_stopping = 1 − N · mean_d g_d² / ((Σ_i G_id² − N g_d²)/(N−1) + 1e-5)  (SGD only;
  ddof=1 here, unlike mean_gsnr).
- hess_trace[p] = Σ diag(∇²L)_p per parameter tensor (BackPACK DiagHessian, exact).
- tic_diag  = Σ_d ((1/N)Σ_i G_id²) / (H_dd + 1e-7);
  tic_trace = ((1/N)Σ_i‖G_i‖²) / (Σ_d H_dd + 1e-7).
- hess_max_ev: power iteration on the mini-batch Hessian, start vector torch.rand_like
  (uniform [0,1), drawn from the global torch RNG), normalized; each iteration returns the
  Rayleigh quotient vᵀHv of the current unit v and normalizes Hv; stops when two
  consecutive Rayleigh quotients satisfy |a−b| ≤ 1e-6 + 1e-3|b| (torch.allclose), at most
  100 iterations. It converges to the eigenvalue of largest *magnitude*.
- grad_hist_1d: all N·P elements G_id, clamped to [-2, 2], torch.histc(bins=100):
  bin = trunc((v + 2) · 100 / 4), bin 100 (v = 2) goes to 99. Counts summed over params.
- grad_hist_2d: pairs (G_id, θ_t,d) for every sample i and element d, so each parameter
  value is counted N times (θ_t = the value at the time of the backward pass). x = G_id
  clamped to [-1 + 0.025, 1 − 0.025], y = θ_d clamped to [-2 + 0.04, 2 − 0.04] (bin
  centres of the edge bins), then bin_x = trunc((x − (−1)) / 0.05), bin_y =
  trunc((y − (−2)) / 0.08), the width computed first as (max − min)/bins in float64;
  counts[bin_x][bin_y] is [40][50], row = gradient bin.
- alpha: d = θ_{t+1} − θ_t (for SGD Cockpit computes d = −lr·Σ_i grad_batch_i = −lr·g inside
  the backward pass instead, which is the same), s = ‖d‖; at the start (θ_t, batch t) and
  at the end (θ_{t+1}, batch t+1): f = L, var_f = var(ℓ_i, ddof=1), projections
  p_i = G_iᵀd/s, df = mean_i p_i, var_df = var(p_i, ddof=1). A variance that is exactly 0
  is replaced by 1e-10. With Φ = [[1,0,0],[1,s,s²],[0,1,0],[0,1,2s]]ᵀ (3×4), Λ =
  diag(var_f0, var_f1, var_df0, var_df1), y = (f0, f1, df0, df1):
  μ = (Φ Λ⁻¹ Φᵀ)⁻¹ Φ Λ⁻¹ y; alpha = −1 if μ₂ < 0, else 2s/(−μ₁/μ₂) − 1.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import sys
import warnings
from typing import Dict, List

import numpy as np
import torch
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import build_model, make_loss, name_seed, out_dim  # noqa: E402
from make_fixtures import FIX, check, log, pkg_version, write  # noqa: E402

warnings.filterwarnings("ignore")

OUT = os.path.join(FIX, "cockpit")
DTYPE = torch.float64

CASES = {
    "mlp_sgd": dict(spec="linear(20,16),relu,linear(16,5)", input_shape=(20,), n=8,
                    steps=4, optimizer="sgd", lr=0.1),
    "mlp_adam": dict(spec="linear(20,16),relu,linear(16,5)", input_shape=(20,), n=8,
                     steps=4, optimizer="adam", lr=0.01),
    "cnn_sgd": dict(spec="conv2d(1,3,k=3,p=1),relu,maxpool2d(2),flatten,linear(12,4)",
                    input_shape=(1, 4, 4), n=6, steps=3, optimizer="sgd", lr=0.05),
}

# Cockpit class name -> secondo instrument name (the JSON key)
KEYS = {
    "Loss": "loss", "GradNorm": "grad_norm", "Distance": "distance",
    "UpdateSize": "update_size", "Alpha": "alpha", "NormTest": "norm_test",
    "InnerTest": "inner_test", "OrthoTest": "ortho_test", "MeanGSNR": "mean_gsnr",
    "CABS": "cabs", "EarlyStopping": "early_stopping", "GradHist1d": "grad_hist_1d",
    "GradHist2d": "grad_hist_2d", "HessMaxEV": "hess_max_ev", "HessTrace": "hess_trace",
    "TICDiag": "tic_diag", "TICTrace": "tic_trace",
}
SGD_ONLY = ("CABS", "EarlyStopping")
KEY_ORDER = ["loss", "grad_norm", "distance", "update_size", "alpha", "norm_test",
             "inner_test", "ortho_test", "mean_gsnr", "cabs", "early_stopping",
             "grad_hist_1d", "grad_hist_2d", "hess_max_ev", "hess_max_ev_exact",
             "hess_trace", "tic_diag", "tic_trace"]
TOL = 1e-10  # relative, float64 Cockpit vs float64 brute force


def quantity_classes(optimizer: str) -> List[str]:
    return [c for c in KEYS if optimizer == "sgd" or c not in SGD_ONLY]


def cockpit_defaults(classes) -> Dict[str, dict]:
    """The constructor defaults of every quantity used (read from the installed Cockpit),
    plus the constants hidden inside the code."""
    from cockpit import quantities as Q
    from cockpit.quantities.hess_max_ev import HVPLinearOperator

    def sig(fn, skip=("self", "track_schedule", "verbose")):
        out = {}
        for k, p in inspect.signature(fn).parameters.items():
            if k in skip or p.default is inspect.Parameter.empty:
                continue
            v = p.default
            out[k] = [list(e) if isinstance(e, tuple) else e for e in v] \
                if isinstance(v, tuple) else v
        return out

    d = {"track_schedule": "cockpit.utils.schedules.linear(interval=1, offset=0): every step"}
    for c in classes:
        d[c] = sig(getattr(Q, c).__init__)
    d["HessMaxEV"]["power_iteration"] = sig(HVPLinearOperator.power_iteration)
    d["HessMaxEV"]["power_iteration"]["init"] = "torch.rand_like(p) per parameter, normalized"
    d["Alpha"]["zero_variance_replacement"] = 1e-10
    d["Alpha"]["projection"] = ("BackPACK hook, d = -lr * sum_i grad_batch_i (SGD without "
                                "momentum)" if "CABS" in classes else
                                "parameter difference d = theta_{t+1} - theta_t")
    return d


# ------------------------------------------------------------ brute-force reference


class StepRef:
    """Float64 reference at one step from an unextended copy of the model: the per-sample
    gradients by a loop over samples and the dense Hessian of the batch loss."""

    def __init__(self, model, theta: Dict[str, torch.Tensor], x, y):
        self.model, self.x, self.y = model, x, y
        self.names = list(theta)
        self.shapes = [theta[k].shape for k in self.names]
        self.sizes = [theta[k].numel() for k in self.names]
        self.offsets = np.cumsum([0] + self.sizes).tolist()
        self.th = torch.cat([theta[k].reshape(-1) for k in self.names]).detach().clone()
        self.n = x.shape[0]
        ce_none = make_loss("cross_entropy", "none")
        self.losses = ce_none(self.f(self.th, x), y).detach()
        self.L = make_loss("cross_entropy", "mean")(self.f(self.th, x), y).item()
        G = []
        for i in range(self.n):  # per-sample gradients of the unscaled sample loss
            th = self.th.clone().requires_grad_(True)
            li = ce_none(self.f(th, x[i:i + 1]), y[i:i + 1]).sum()
            G.append(torch.autograd.grad(li, th)[0])
        self.G = torch.stack(G)  # [N, P]
        self.g = self.G.mean(0)
        self.H = torch.func.hessian(self.Lflat)(self.th)
        self.H = 0.5 * (self.H + self.H.T)

    def unflat(self, th):
        return {nm: th[a:b].reshape(s) for nm, s, a, b in
                zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:])}

    def f(self, th, x):
        return functional_call(self.model, self.unflat(th), (x,))

    def Lflat(self, th):
        return make_loss("cross_entropy", "mean")(self.f(th, self.x), self.y)

    def per_param(self, flat):
        return [flat[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]


def ref_quantities(r: StepRef, theta_t, theta0, lr, optimizer):
    N, G, g = r.n, r.G, r.g
    g2 = (g ** 2).sum()
    l2 = (G ** 2).sum(1)  # ‖G_i‖²
    proj = G @ g  # G_iᵀg
    sq = (G ** 2).sum(0)  # Σ_i G_id²
    diag_h = torch.diagonal(r.H)
    out = {
        "loss": r.L,
        "grad_norm": [v.norm().item() for v in r.per_param(g)],
        "distance": [(theta_t[k] - theta0[k]).norm().item() for k in r.names],
        "norm_test": (((l2.sum() - N * g2) / (N - 1)) / (N * g2)).sqrt().item(),
        "inner_test": (((proj ** 2).sum() - N * g2 ** 2) / (N - 1) / (N * g2 ** 2)).sqrt().item(),
        "ortho_test": (((l2.sum() - (proj ** 2).sum() / g2) / (N - 1)) / (N * g2)).sqrt().item(),
        "mean_gsnr": (g ** 2 / (sq / N - g ** 2 + 1e-5)).mean().item(),
        "hess_trace": [v.sum().item() for v in r.per_param(diag_h)],
        "tic_diag": ((sq / N) / (diag_h + 1e-7)).sum().item(),
        "tic_trace": ((sq / N).sum() / (diag_h.sum() + 1e-7)).item(),
    }
    if optimizer == "sgd":
        out["cabs"] = (lr * (sq - N * g ** 2).sum() / (N * r.L)).item()
        out["early_stopping"] = 1 - N * (g ** 2 / ((sq - N * g ** 2) / (N - 1) + 1e-5)).mean().item()
    # histograms, the binning written out with numpy
    Gn = G.numpy()
    v = np.clip(Gn.reshape(-1), -2.0, 2.0)
    b = ((v - (-2.0)) * 100 / (2.0 - (-2.0))).astype(np.int64)
    b[b == 100] = 99
    out["grad_hist_1d"] = np.bincount(b, minlength=100)
    th_rep = np.broadcast_to(r.th.numpy(), Gn.shape).reshape(-1)
    (xl, xu), (yl, yu), (nx, ny) = (-1.0, 1.0), (-2.0, 2.0), (40, 50)
    bx, by = (xu - xl) / nx, (yu - yl) / ny
    gx = np.clip(Gn.reshape(-1), xl + bx / 2, xu - bx / 2)
    py = np.clip(th_rep, yl + by / 2, yu - by / 2)
    ix = ((gx - xl) / bx).astype(np.int64)
    iy = ((py - yl) / by).astype(np.int64)
    out["grad_hist_2d"] = np.bincount(ix * ny + iy, minlength=nx * ny).reshape(nx, ny)
    ev = torch.linalg.eigvalsh(r.H)
    out["hess_max_ev_exact"] = ev.max().item()
    out["_hess_dominant_ev"] = ev[ev.abs().argmax()].item()
    return out


def ref_alpha(r0: StepRef, r1: StepRef):
    """Alpha between a start point r0 (θ_t, batch t) and end point r1 (θ_{t+1}, batch t+1),
    written independently of Cockpit's code (a weighted least-squares solve)."""
    d = r1.th - r0.th
    s = d.norm().item()
    fs, dfs, vf, vdf = [], [], [], []
    for r in (r0, r1):
        p = (r.G @ d / s).numpy()
        fs.append(r.L)
        dfs.append(p.mean())
        vf.append(r.losses.numpy().var(ddof=1))
        vdf.append(p.var(ddof=1))
    var = np.array([v if v != 0 else 1e-10 for v in vf + vdf])
    A = np.array([[1, 0, 0], [1, s, s * s], [0, 1, 0], [0, 1, 2 * s]], dtype=np.float64)
    w = 1 / np.sqrt(var)
    mu = np.linalg.lstsq(A * w[:, None], np.array(fs + dfs) * w, rcond=None)[0]
    if mu[2] < 0:
        return -1.0
    return 2 * s / (-mu[1] / mu[2]) - 1


# ------------------------------------------------------------------ running Cockpit


def run_case(name: str, cfg: dict):
    from backpack import extend
    from cockpit import Cockpit
    from cockpit import quantities as Q
    from cockpit.context import CockpitCTX
    from cockpit.utils.schedules import linear

    seed = name_seed("cockpit/" + name)
    torch.manual_seed(seed)
    model = build_model(cfg["spec"], DTYPE)
    n_cls = out_dim(cfg["spec"])
    n, steps = cfg["n"], cfg["steps"]
    # all batches drawn up front (HessMaxEV's power iteration draws from the same RNG)
    xs = [torch.randn(n, *cfg["input_shape"], dtype=DTYPE) for _ in range(steps)]
    ys = [torch.randint(0, n_cls, (n,), dtype=torch.int64) for _ in range(steps)]
    ref_model = copy.deepcopy(model)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}

    model = extend(model)
    lossfn = extend(make_loss("cross_entropy", "mean"))
    ind_lossfn = make_loss("cross_entropy", "none")
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
        hyper = {k: opt.defaults[k] for k in ("lr", "momentum", "dampening", "weight_decay",
                                              "nesterov")}
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        hyper = {k: opt.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
        hyper["betas"] = list(hyper["betas"])
    hyper = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
             for k, v in hyper.items()}
    classes = quantity_classes(cfg["optimizer"])
    sched = linear(interval=1)
    cp = Cockpit(model.parameters(), quantities=[getattr(Q, c)(sched) for c in classes])

    # Cockpit's power iteration starts from torch.Tensor([inf]) (default dtype) and compares
    # it with a float64 eigenvalue through torch.allclose, which refuses mixed dtypes: with
    # a float64 model the default dtype has to be float64 while Cockpit runs.
    old_default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPE)
    thetas = []
    for t in range(steps):
        thetas.append({k: v.detach().clone() for k, v in model.named_parameters()})
        opt.zero_grad()
        out = model(xs[t])
        loss = lossfn(out, ys[t])
        losses = ind_lossfn(out, ys[t])
        with cp(t, info={"batch_size": n, "individual_losses": losses, "loss": loss,
                         "optimizer": opt}):
            loss.backward(create_graph=cp.create_graph(t))
        opt.step()
    thetas.append({k: v.detach().clone() for k, v in model.named_parameters()})
    torch.set_default_dtype(old_default)
    CockpitCTX.erase()
    output = cp.get_output()
    for p in model.parameters():  # break the create_graph reference cycles
        p.grad = None

    # ---- collect Cockpit's values under secondo's names
    records = []
    for t in range(steps):
        o = output.get(t, {})
        rec = {"step": t}
        for c in classes:
            if c not in o:
                continue
            v = o[c]
            k = KEYS[c]
            if c == "GradHist1d":
                e = np.asarray(v["edges"])
                rec[k] = {"range": [float(e[0]), float(e[-1])],
                          "counts": [int(round(float(h))) for h in np.asarray(v["hist"])]}
                assert len(e) == 101
            elif c == "GradHist2d":
                ex, ey = (np.asarray(a) for a in v["edges"])
                h = np.asarray(v["hist"])
                assert h.shape == (40, 50), h.shape
                rec[k] = {"x_range": [float(ex[0]), float(ex[-1])],
                          "y_range": [float(ey[0]), float(ey[-1])],
                          "counts": [[int(c_) for c_ in row] for row in h]}
            elif isinstance(v, list):
                rec[k] = [float(e) for e in v]
            else:
                rec[k] = float(v)
        records.append(rec)

    # ---- check against the brute-force reference
    refs = [StepRef(ref_model, thetas[t], xs[t], ys[t]) for t in range(steps)]
    worst: Dict[str, float] = {}
    pi_err = []

    def cmp(key, got, want, t):
        got_t = torch.tensor(np.asarray(got, dtype=np.float64))
        want_t = torch.tensor(np.asarray(want, dtype=np.float64))
        if key == "distance" and t == 0:
            assert float(got_t.abs().max()) == 0.0 and float(want_t.abs().max()) == 0.0
            return
        err = check(f"{name} step {t} {key}", got_t, want_t, TOL,
                    scale=max(1e-300, float(want_t.abs().max())) if key != "alpha"
                    else max(1.0, abs(float(want_t))))
        worst[key] = max(worst.get(key, 0.0), err)

    for t, rec in enumerate(records):
        want = ref_quantities(refs[t], thetas[t], init, cfg["lr"], cfg["optimizer"])
        expect_keys = {KEYS[c] for c in classes}
        if t == steps - 1:
            expect_keys -= {"update_size", "alpha"}
        assert set(rec) - {"step"} == expect_keys, (name, t, sorted(set(rec) ^ expect_keys))
        for k in ("loss", "grad_norm", "distance", "norm_test", "inner_test", "ortho_test",
                  "mean_gsnr", "hess_trace", "tic_diag", "tic_trace", "cabs",
                  "early_stopping"):
            if k in rec:
                cmp(k, rec[k], want[k], t)
        if "update_size" in rec:
            cmp("update_size", rec["update_size"],
                [(thetas[t + 1][k] - thetas[t][k]).norm().item() for k in refs[t].names], t)
        if "alpha" in rec:
            cmp("alpha", rec["alpha"], ref_alpha(refs[t], refs[t + 1]), t)
        for k in ("grad_hist_1d", "grad_hist_2d"):
            got = np.asarray(rec[k]["counts"])
            if not np.array_equal(got, want[k]):
                raise AssertionError(f"{name} step {t} {k}: counts differ in "
                                     f"{int((got != want[k]).sum())} bins")
            assert got.sum() == refs[t].G.numel(), (name, t, k)
        assert rec["grad_hist_1d"]["range"] == [-2.0, 2.0]
        assert rec["grad_hist_2d"]["x_range"] == [-1.0, 1.0]
        assert rec["grad_hist_2d"]["y_range"] == [-2.0, 2.0]
        rec["hess_max_ev_exact"] = want["hess_max_ev_exact"]
        dom = want["_hess_dominant_ev"]
        e = abs(rec["hess_max_ev"] - dom) / abs(dom)
        pi_err.append(e)
        if e > 1e-2:  # rtol 1e-3 between iterates; anything far off is a broken convention
            raise AssertionError(f"{name} step {t} hess_max_ev {rec['hess_max_ev']} vs "
                                 f"dominant eigenvalue {dom}: rel err {e:.2e}")
        records[t] = {"step": t, **{k: rec[k] for k in KEY_ORDER if k in rec}}

    worst_txt = ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items()))
    log(f"cockpit/{name}: P={refs[0].th.numel()} N={n} steps={steps} "
        f"max rel err: {worst_txt}; hess_max_ev vs dominant eigenvalue: "
        f"{max(pi_err):.1e}")

    # ---- write
    versions = {"torch": torch.__version__, "backpack": pkg_version("backpack-for-pytorch"),
                "cockpit": pkg_version("cockpit-for-pytorch")}
    doc = {
        "case": name,
        "spec": cfg["spec"],
        "loss": "cross_entropy",
        "reduction": "mean",
        "dtype": "float64",
        "batch_size": n,
        "input_shape": list(cfg["input_shape"]),
        "num_steps": steps,
        "seed": seed,
        "parameters": [{"name": k, "shape": list(v.shape)} for k, v in init.items()],
        "optimizer": {"name": cfg["optimizer"], **hyper},
        "defaults": cockpit_defaults(classes),
        "versions": versions,
        "notes": [
            "step t's values are tracked during the backward pass of step t, at theta/<t> "
            "on x/<t>, y/<t>, before optimizer.step()",
            "update_size and alpha of step t are computed at step t+1 (the last step has none)",
            "hess_max_ev is Cockpit's power iteration (random start); hess_max_ev_exact is "
            "the largest eigenvalue of the dense mini-batch Hessian (torch.func, eigvalsh)",
            "per-parameter lists follow 'parameters' (state_dict order)",
        ],
        "steps": records,
    }
    tensors = {}
    for k, v in init.items():
        tensors[f"init/{k}"] = v
    for t, th in enumerate(thetas):
        for k, v in th.items():
            tensors[f"theta/{t}/{k}"] = v
    for t in range(steps):
        tensors[f"x/{t}"] = xs[t]
        tensors[f"y/{t}"] = ys[t]
    meta = {
        "spec": cfg["spec"], "loss": "cross_entropy", "reduction": "mean",
        "dtype": "float64", "seed": seed, "batch_size": n,
        "input_shape": ",".join(str(s) for s in cfg["input_shape"]),
        "optimizer": cfg["optimizer"], "lr": repr(cfg["lr"]), "steps": steps,
        "optimizer_hyperparameters": json.dumps(hyper, sort_keys=True),
        "source": "cockpit-for-pytorch (every quantity, every step)",
        "torch_version": versions["torch"], "backpack_version": versions["backpack"],
        "cockpit_version": versions["cockpit"], "format": "secondo-fixture-v1",
        "versions": json.dumps(versions, sort_keys=True),
        "note": "init/<name>, theta/<step>/<name> (before step; theta/<steps> after the "
                "last), x/<step>, y/<step>; expected values in the .json beside this file",
    }
    os.makedirs(OUT, exist_ok=True)
    write(os.path.join(OUT, name + ".safetensors"), tensors, meta)
    with open(os.path.join(OUT, name + ".json"), "w") as fh:
        fh.write(dump_json(doc) + "\n")
    # read back
    with open(os.path.join(OUT, name + ".json")) as fh:
        back = json.load(fh)
    assert back == json.loads(json.dumps(doc)), name


def dump_json(v, ind=0) -> str:
    """JSON with objects indented, lists of numbers on one line and a list of such lists
    one row per line; floats as repr (shortest round-trip)."""
    pad, pad1 = " " * ind, " " * (ind + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{pad1}{json.dumps(k)}: {dump_json(x, ind + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list):
        if v and all(isinstance(x, list) for x in v):
            return "[\n" + ",\n".join(pad1 + dump_json(x, ind + 1) for x in v) + "\n" + pad + "]"
        if any(isinstance(x, (dict, str)) for x in v):
            return "[\n" + ",\n".join(pad1 + dump_json(x, ind + 1) for x in v) + "\n" + pad + "]"
        return "[" + ", ".join(dump_json(x, ind) for x in v) + "]"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"non-finite value {v} in JSON")
        return repr(v)
    return json.dumps(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None,
                    help="comma-separated subset of: " + ", ".join(CASES))
    args = ap.parse_args()
    only = list(CASES) if args.only is None else args.only.split(",")
    bad = [c for c in only if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {list(CASES)}")
    torch.set_num_threads(1)  # bitwise reproducible reductions
    for c in CASES:  # fixed order
        if c in only:
            run_case(c, CASES[c])
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"cockpit fixtures: {size / 1024:.1f} KiB", flush=True)


if __name__ == "__main__":
    main()
