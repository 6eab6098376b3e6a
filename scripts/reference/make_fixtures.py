#!/usr/bin/env python3
"""Regenerate secondo's committed reference fixtures (PyTorch, BackPACK, curvlinops).

Usage (from the repository root)::

    .venv/bin/python scripts/reference/make_fixtures.py [--only GROUP[,GROUP...]]

GROUP is one of grad, grad_norm, backpack, backpack_conv, curvlinops, curvlinops_resnet.
Writes ``tests/fixtures/<GROUP>/*.safetensors`` for each group. Every file is
self-contained (inputs, targets, parameters, expected quantities) and carries string
metadata (``spec``, ``loss``, ``reduction``, ``dtype`` and extras). Output is
deterministic: every case seeds torch with a fixed seed stored in its metadata.

Besides writing, the script cross-checks each library output against an independent
dense computation done with ``torch.func`` in float64 (and the gradients against
central finite differences) and aborts if a convention does not hold.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import struct
import sys
import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import load_file
from torch.func import functional_call, grad as fgrad, hessian as fhessian, jacrev

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    DTYPE_NAME,
    build_model,
    io_dims,
    loss_scale,
    make_case,
    make_loss,
    make_targets,
    name_seed,
    out_dim,
    param_tensors,
)

warnings.filterwarnings("ignore")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

ACTS = [
    ("relu", "relu"),
    ("sigmoid", "sigmoid"),
    ("tanh", "tanh"),
    ("leakyrelu", "leakyrelu(0.1)"),
    ("elu", "elu"),
    ("selu", "selu"),
    ("softplus", "softplus"),
    ("gelu", "gelu"),
    ("identity", "identity"),
]
LOSSES = ["cross_entropy", "mse", "bce_with_logits"]

REPORT: List[str] = []


def log(msg: str) -> None:
    print(msg, flush=True)
    REPORT.append(msg)


# --------------------------------------------------------------------------- io


_ST_DTYPE = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def save_deterministic(tensors: Dict[str, torch.Tensor], path: str, meta: Dict[str, str]):
    """Write a safetensors file byte-for-byte reproducibly (the official writer orders the
    metadata map randomly): metadata and tensors sorted by name, compact JSON header padded
    with spaces to a multiple of 8 bytes, data laid out in name order."""
    header = {"__metadata__": dict(sorted(meta.items()))}
    blobs, off = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        raw = t.cpu().numpy().astype(t.cpu().numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hb)))
        fh.write(hb)
        for raw in blobs:
            fh.write(raw)


def write(path: str, tensors: Dict[str, torch.Tensor], meta: Dict[str, str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in meta.items()}
    save_deterministic(tensors, path, meta)
    with safe_open(path, "pt") as fh:
        assert fh.metadata() == meta, path
    # read back and compare
    back = load_file(path)
    assert set(back) == set(tensors), path
    for k, v in tensors.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, (path, k)
        assert torch.equal(back[k], v), (path, k)


def pkg_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def base_meta(spec, loss, reduction, dtype, seed, n, source) -> Dict[str, str]:
    return {
        "spec": spec,
        "loss": loss,
        "reduction": reduction,
        "dtype": DTYPE_NAME[dtype],
        "seed": str(seed),
        "batch_size": str(n),
        "num_data": str(n),
        "source": source,
        "torch_version": torch.__version__,
        "format": "secondo-fixture-v1",
    }


# ----------------------------------------------------- independent references


class Ref:
    """Dense float64 reference quantities computed with torch.func."""

    def __init__(self, model, x, y, loss, reduction):
        self.model = copy.deepcopy(model).double()
        self.names = [k for k, _ in self.model.named_parameters()]
        self.shapes = [p.shape for _, p in self.model.named_parameters()]
        self.sizes = [p.numel() for _, p in self.model.named_parameters()]
        self.offsets = np.cumsum([0] + self.sizes).tolist()
        self.theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        self.x = x.double()
        self.y = y if y.dtype == torch.int64 else y.double()
        self.lossfn = make_loss(loss, reduction)
        self.n = x.shape[0]
        self.c = io_dims_from_model(self.model)[1]
        self.s = loss_scale(loss, reduction, self.n, self.c)

    def unflat(self, theta):
        out, i = {}, 0
        for nm, shp, sz in zip(self.names, self.shapes, self.sizes):
            out[nm] = theta[i : i + sz].reshape(shp)
            i += sz
        return out

    def f(self, theta, x=None):
        return functional_call(self.model, self.unflat(theta), (self.x if x is None else x,))

    def L(self, theta):
        return self.lossfn(self.f(theta), self.y)

    def split(self, flat):
        """flat [..., P] -> dict name -> [..., *shape]"""
        out = {}
        for nm, shp, a, b in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:]):
            out[nm] = flat[..., a:b].reshape(*flat.shape[:-1], *shp)
        return out

    def compute(self):
        th = self.theta
        out = self.f(th)
        self.J = jacrev(self.f)(th)  # [N, C, P]
        Lo = lambda o: self.lossfn(o, self.y)  # noqa: E731
        g_out = fgrad(Lo)(out)  # [N, C]
        H_out = fhessian(Lo)(out)  # [N, C, N, C]
        n = self.n
        self.H_out_n = torch.stack([H_out[i, :, i, :] for i in range(n)])  # [N, C, C]
        self.contrib = torch.einsum("ncp,nc->np", self.J, g_out)  # per-sample terms of grad
        self.grad = torch.func.grad(self.L)(th)
        self.ggn_n = torch.einsum("ncp,ncd,ndq->npq", self.J, self.H_out_n, self.J)
        self.ggn = self.ggn_n.sum(0)
        self.hess = fhessian(self.L)(th)
        return self


def io_dims_from_model(model):
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    return lins[0].in_features, lins[-1].out_features


def kflr_reference(ref: Ref) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
    """Per Linear layer index l: (B, A) with
    B = sum_n G_n^T H_n G_n  (G_n = d f_n / d z_{l,n}, H_n = Hessian of L w.r.t. f_n),
    A = 1/N sum_n a_n a_n^T  (a_n = input of layer l)."""
    model = ref.model
    params = ref.unflat(ref.theta)
    h = ref.x
    res = {}
    for i, layer in enumerate(model):
        if isinstance(layer, torch.nn.Linear):
            a = h
            z = torch.nn.functional.linear(a, params[f"{i}.weight"], params.get(f"{i}.bias"))
            rest = model[i + 1 :]

            def rest_f(zz, rest=rest, i=i):
                # Sequential slices keep the original child names
                pr = {k: v for k, v in params.items() if int(k.split(".", 1)[0]) > i}
                return functional_call(rest, pr, (zz,))

            G = torch.vmap(jacrev(rest_f))(z)  # [N, C, out_l]
            B = torch.einsum("nco,ncd,ndp->op", G, ref.H_out_n, G)
            A = a.T @ a / a.shape[0]
            res[i] = (B, A)
            h = z
        else:
            h = layer(h)
    return res


def kfra_reference(ref: Ref) -> Dict[int, torch.Tensor]:
    """KFRA output factor B per Linear layer (Botev et al. 2017 as in BackPACK):
    B_last = sum_n H_n (H_n: Hessian of L w.r.t. f_n), then backwards
    Linear:      M <- W^T M W
    activation:  M <- 1/N sum_n diag(phi'(h_n)) M diag(phi'(h_n))."""
    model = ref.model
    params = ref.unflat(ref.theta)
    inputs, h = [], ref.x
    for layer in model:
        inputs.append(h)
        h = layer(h)
    M = ref.H_out_n.sum(0)
    res = {}
    for i in reversed(range(len(model))):
        layer = model[i]
        if isinstance(layer, torch.nn.Linear):
            res[i] = M
            W = params[f"{i}.weight"]
            M = W.T @ M @ W
        else:
            hin = inputs[i].detach().requires_grad_(True)
            d = torch.autograd.grad(layer(hin).sum(), hin)[0]  # phi'(h) elementwise
            M = torch.einsum("ni,ij,nj->ij", d, M, d) / d.shape[0]
    return res


def max_rel(a, b, scale=None):
    """max |a - b| relative to max |b| (or to ``scale`` when given)."""
    a, b = a.double(), b.double()
    den = b.abs().max().item() if scale is None else float(scale)
    return ((a - b).abs().max() / (den + 1e-30)).item()


def check(name, got, want, tol, scale=None):
    err = max_rel(got, want, scale)
    if not err <= tol:
        raise AssertionError(f"{name}: rel err {err:.3e} > {tol:.1e}")
    return err


# ------------------------------------------------------------------ 1. grads


def grad_case(fname, spec, loss, reduction, n, dtype):
    seed = name_seed("grad/" + fname)
    model, x, y = make_case(spec, loss, n, dtype, seed)
    lossfn = make_loss(loss, reduction)
    params = dict(model.named_parameters())
    L = lossfn(model(x), y)
    grads = torch.autograd.grad(L, list(params.values()))
    t = {"x": x, "y": y, **param_tensors(model), "loss": L.detach().reshape(1)}
    for nm, g in zip(params, grads):
        t[f"grad/{nm}"] = g
    meta = base_meta(spec, loss, reduction, dtype, seed, n, "torch.autograd")
    meta["note"] = "grad/<name> = d loss / d param; loss has shape [1]"
    write(os.path.join(FIX, "grad", fname + ".safetensors"), t, meta)

    # checks: dense reference (float64) and central finite differences
    ref = Ref(model, x, y, loss, reduction)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    check(f"{fname} grad vs ref", torch.cat([g.reshape(-1) for g in grads]),
          torch.func.grad(ref.L)(ref.theta), tol)
    fd_err = None
    if dtype == torch.float64:
        eps = 1e-6
        th = ref.theta
        fd = torch.zeros_like(th)
        with torch.no_grad():
            for i in range(th.numel()):
                e = torch.zeros_like(th)
                e[i] = eps
                fd[i] = (ref.L(th + e) - ref.L(th - e)) / (2 * eps)
        fd_err = check(f"{fname} grad vs FD", torch.cat([g.reshape(-1) for g in grads]), fd, 1e-6)
    log(f"grad/{fname}: P={ref.theta.numel()} N={n} fd_rel_err={fd_err}")


def make_grad():
    grad_case("mlp_f32", "linear(20,16),tanh,linear(16,16),relu,linear(16,5)",
              "cross_entropy", "mean", 8, torch.float32)
    grad_case("mlp_f64", "linear(20,16),tanh,linear(16,16),relu,linear(16,5)",
              "cross_entropy", "mean", 8, torch.float64)
    for fn, act in ACTS:
        for loss in LOSSES:
            grad_case(f"{fn}_{loss}", f"linear(6,5),{act},linear(5,3)", loss, "mean", 7,
                      torch.float64)
    for fn, act, loss in [("tanh", "tanh", "cross_entropy"), ("relu", "relu", "mse"),
                          ("sigmoid", "sigmoid", "bce_with_logits"),
                          ("gelu", "gelu", "cross_entropy")]:
        grad_case(f"{fn}_{loss}_sum", f"linear(6,5),{act},linear(5,3)", loss, "sum", 7,
                  torch.float64)
    grad_case("nobias_cross_entropy", "linear(6,5,bias=false),tanh,linear(5,3)",
              "cross_entropy", "mean", 7, torch.float64)


# --------------------------------------------------------------- 2. backpack

MC_SAMPLES = 2000


def backpack_exts():
    from backpack.extensions import (
        KFAC, KFLR, KFRA, BatchDiagGGNExact, BatchGrad, BatchL2Grad, DiagGGNExact,
        DiagGGNMC, DiagHessian, SumGradSquared, Variance)

    return [
        # (fixture name, factory, attribute BackPACK writes, monte-carlo?)
        ("batch_grad", BatchGrad, "grad_batch", False),
        ("batch_l2", BatchL2Grad, "batch_l2", False),
        ("sum_grad_squared", SumGradSquared, "sum_grad_squared", False),
        ("variance", Variance, "variance", False),
        ("diag_ggn_exact", DiagGGNExact, "diag_ggn_exact", False),
        ("batch_diag_ggn_exact", BatchDiagGGNExact, "diag_ggn_exact_batch", False),
        ("diag_hessian", DiagHessian, "diag_h", False),
        ("kflr", KFLR, "kflr", False),
        ("kfra", KFRA, "kfra", False),
        ("diag_ggn_mc", lambda: DiagGGNMC(mc_samples=MC_SAMPLES), "diag_ggn_mc", True),
        ("kfac", lambda: KFAC(mc_samples=MC_SAMPLES), "kfac", True),
    ]


def backpack_case(fname, spec, loss, reduction, n, dtype):
    from backpack import backpack, extend

    seed = name_seed("backpack/" + fname)
    mc_seed = seed + 1
    model, x, y = make_case(spec, loss, n, dtype, seed)
    t = {"x": x, "y": y, **param_tensors(model)}
    clean = copy.deepcopy(model)  # un-hooked copy for the reference computation
    model = extend(model)
    lossfn = extend(make_loss(loss, reduction))
    params = dict(model.named_parameters())

    L = lossfn(model(x), y)
    for nm, g in zip(params, torch.autograd.grad(L, list(params.values()))):
        t[f"grad/{nm}"] = g
    t["loss"] = L.detach().reshape(1)

    got, skipped = {}, []
    for qname, factory, attr, is_mc in backpack_exts():
        for p in params.values():
            p.grad = None
            if hasattr(p, attr):
                delattr(p, attr)
        try:
            if is_mc:
                torch.manual_seed(mc_seed)
            with backpack(factory()):
                lossfn(model(x), y).backward()
            vals = {nm: getattr(p, attr) for nm, p in params.items()}
        except Exception as e:  # BackPACK refuses this configuration
            full = str(e)
            m = re.search(r"extension for Module <class '([\w.]+)'>", full)
            if m:
                msg = f"no BackPACK extension for {m.group(1).rsplit('.', 1)[-1]}"
            elif full:
                msg = f"{type(e).__name__}: {full.splitlines()[0][:80]}"
            else:
                msg = f"{type(e).__name__} (empty message) raised by BackPACK"
            skipped.append(f"{qname} ({msg})")
            continue
        got[qname] = vals
        for nm, v in vals.items():
            if isinstance(v, (list, tuple)):
                if len(v) == 2:
                    t[f"{qname}/{nm}/out"], t[f"{qname}/{nm}/in"] = v[0], v[1]
                elif len(v) == 1:
                    t[f"{qname}/{nm}/out"] = v[0]
                else:
                    raise RuntimeError(f"unexpected factor count {len(v)}")
            else:
                t[f"{qname}/{nm}"] = v

    meta = base_meta(spec, loss, reduction, dtype, seed, n, "backpack-for-pytorch")
    meta.update({
        "backpack_version": pkg_version("backpack-for-pytorch"),
        "quantities": ",".join(got),
        "skipped": "; ".join(skipped),
        "mc_samples": str(MC_SAMPLES),
        "mc_seed": str(mc_seed),
        "note": ("diag_ggn_mc and kfac are Monte-Carlo estimates (mc_samples, torch global "
                 "RNG seeded with mc_seed right before backward): approximate, compare with "
                 "a loose tolerance. Kronecker factors: <q>/<W>/out = B [out,out], "
                 "<q>/<W>/in = A [in,in], block ~ kron(B, A) in row-major vec(W); "
                 "bias: <q>/<b>/out only. Scaling: see scripts/reference/README.md"),
    })
    write(os.path.join(FIX, "backpack", fname + ".safetensors"), t, meta)

    # ---- independent checks of BackPACK's conventions
    ref = Ref(clean, x, y, loss, reduction).compute()
    tol = 1e-10 if dtype == torch.float64 else 5e-4
    sp = lambda flat: ref.split(flat)  # noqa: E731
    c = ref.contrib  # [N, P], sums to the gradient
    errs = {}
    exp = {
        "batch_grad": sp(c),
        "batch_l2": {nm: (v.reshape(n, -1) ** 2).sum(1) for nm, v in sp(c).items()},
        "sum_grad_squared": sp((c**2).sum(0)),
        "variance": sp((c**2).mean(0) - c.mean(0) ** 2),
        "diag_ggn_exact": sp(torch.diagonal(ref.ggn)),
        "batch_diag_ggn_exact": sp(torch.diagonal(ref.ggn_n, dim1=1, dim2=2)),
        "diag_hessian": sp(torch.diagonal(ref.hess)),
    }
    for q, want in exp.items():
        if q in got:
            # variance can be ~0 (N = 1): measure it on the scale of the squared gradients
            scale = {nm: (exp["sum_grad_squared"][nm].abs().max() if q == "variance" else None)
                     for nm in want}
            errs[q] = max(check(f"{fname} {q}/{nm}", got[q][nm], want[nm], tol, scale[nm])
                          for nm in want)
    kref = kflr_reference(ref)
    if "kflr" in got:
        e = 0.0
        for i, (B, A) in kref.items():
            e = max(e, check(f"{fname} kflr {i} B", got["kflr"][f"{i}.weight"][0], B, tol))
            e = max(e, check(f"{fname} kflr {i} A", got["kflr"][f"{i}.weight"][1], A, tol))
            if f"{i}.bias" in got["kflr"]:
                e = max(e, check(f"{fname} kflr {i} bias", got["kflr"][f"{i}.bias"][0], B, tol))
            if n == 1:  # exact block of the GGN for N = 1
                j = ref.names.index(f"{i}.weight")
                a, b = ref.offsets[j], ref.offsets[j + 1]
                e = max(e, check(f"{fname} kflr kron {i}",
                                 torch.kron(got["kflr"][f"{i}.weight"][0],
                                            got["kflr"][f"{i}.weight"][1]),
                                 ref.ggn[a:b, a:b], tol))
        errs["kflr"] = e
    approx = {}
    if "diag_ggn_mc" in got:
        approx["diag_ggn_mc"] = max(max_rel(got["diag_ggn_mc"][nm], exp["diag_ggn_exact"][nm])
                                    for nm in params)
    if "kfac" in got:
        approx["kfac"] = max(max_rel(got["kfac"][f"{i}.weight"][0], B) for i, (B, _) in kref.items())
        for i, (_, A) in kref.items():
            check(f"{fname} kfac {i} A", got["kfac"][f"{i}.weight"][1], A, tol)
    if "kfra" in got:
        e = 0.0
        for i, B in kfra_reference(ref).items():
            e = max(e, check(f"{fname} kfra {i} B", got["kfra"][f"{i}.weight"][0], B, tol))
            e = max(e, check(f"{fname} kfra {i} A", got["kfra"][f"{i}.weight"][1],
                             kref[i][1], tol))
            if f"{i}.bias" in got["kfra"]:
                e = max(e, check(f"{fname} kfra {i} bias", got["kfra"][f"{i}.bias"][0], B, tol))
        errs["kfra"] = e
    log(f"backpack/{fname}: N={n} {DTYPE_NAME[dtype]} got={list(got)} "
        f"exact_errs={ {k: f'{v:.1e}' for k, v in errs.items()} } "
        f"approx_rel={ {k: f'{v:.2e}' for k, v in approx.items()} } skipped={skipped}")


def make_backpack():
    ns = [1, 3, 8]
    for ia, (fn, act) in enumerate(ACTS):
        for il, loss in enumerate(LOSSES):
            n = ns[(ia + il) % 3]
            out = 1 if loss == "bce_with_logits" else 3
            backpack_case(f"{fn}_{loss}_n{n}", f"linear(6,5),{act},linear(5,{out})", loss,
                          "mean", n, torch.float32)
    # BCE with several outputs: BackPACK's second-order extensions refuse C > 1
    backpack_case("tanh_bce_with_logits_c3_n3", "linear(6,5),tanh,linear(5,3)",
                  "bce_with_logits", "mean", 3, torch.float32)
    # deeper f64 models
    deep = "linear(5,4),tanh,linear(4,4),relu,linear(4,3)"
    backpack_case("deep_cross_entropy_n8_f64", deep, "cross_entropy", "mean", 8, torch.float64)
    backpack_case("deep_cross_entropy_n1_f64", deep, "cross_entropy", "mean", 1, torch.float64)
    backpack_case("deep_mse_n3_f64", deep, "mse", "mean", 3, torch.float64)
    backpack_case("deep_bce_with_logits_n5_f64",
                  "linear(5,4),sigmoid,linear(4,4),tanh,linear(4,1)",
                  "bce_with_logits", "mean", 5, torch.float64)
    backpack_case("deep_sigmoid_cross_entropy_n3_f32",
                  "linear(5,4),sigmoid,linear(4,4),relu,linear(4,3)",
                  "cross_entropy", "mean", 3, torch.float32)
    # sum reduction
    backpack_case("tanh_cross_entropy_sum_n3_f64", "linear(6,5),tanh,linear(5,3)",
                  "cross_entropy", "sum", 3, torch.float64)
    backpack_case("relu_mse_sum_n8", "linear(6,5),relu,linear(5,3)", "mse", "sum", 8,
                  torch.float32)
    backpack_case("sigmoid_bce_with_logits_sum_n3", "linear(6,5),sigmoid,linear(5,1)",
                  "bce_with_logits", "sum", 3, torch.float32)


# ------------------------------------------------------------- 3. curvlinops

CURV_MC = 2000
CURV_MC_SEED = 2024


def curvlinops_case(fname, spec, loss, reduction, n, batch, dtype=torch.float64):
    from curvlinops import (EFLinearOperator, FisherMCLinearOperator, GGNLinearOperator,
                            HessianLinearOperator, JacobianLinearOperator,
                            TransposedJacobianLinearOperator)

    seed = name_seed("curvlinops/" + fname)
    model, x, y = make_case(spec, loss, n, dtype, seed)
    torch.manual_seed(seed + 1)
    params = [p for p in model.parameters()]
    P = sum(p.numel() for p in params)
    v = torch.randn(P, dtype=dtype)
    d_out = io_dims(spec)[1]
    u = torch.randn(n, d_out, dtype=dtype)
    lossfn = make_loss(loss, reduction)
    data = list(zip(x.split(batch), y.split(batch)))

    H = HessianLinearOperator(model, lossfn, params, data)
    G = GGNLinearOperator(model, lossfn, params, data)
    E = EFLinearOperator(model, lossfn, params, data)
    F = FisherMCLinearOperator(model, lossfn, params, data, seed=CURV_MC_SEED,
                               mc_samples=CURV_MC)
    Jop = JacobianLinearOperator(model, params, data)
    JTop = TransposedJacobianLinearOperator(model, params, data)
    I = torch.eye(P, dtype=dtype)
    Hd, Gd, Ed = H @ I, G @ I, E @ I
    t = {"x": x, "y": y, **param_tensors(model)}
    gr, L = H.gradient_and_loss()
    for nm, g in zip(dict(model.named_parameters()), gr):
        t[f"grad/{nm}"] = g
    t["loss"] = L.reshape(1)
    t.update({
        "hessian": Hd, "ggn": Gd, "ef": Ed, "v": v,
        "hvp": H @ v, "ggnvp": G @ v, "efvp": E @ v, "fisher_mc_vp": F @ v,
        "hessian_eigvals": torch.linalg.eigvalsh(0.5 * (Hd + Hd.T)).flip(0),
        "ggn_eigvals": torch.linalg.eigvalsh(0.5 * (Gd + Gd.T)).flip(0),
        "jvp": (Jop @ v).reshape(n, d_out), "u": u, "vjp": JTop @ u.reshape(-1),
    })
    meta = base_meta(spec, loss, reduction, dtype, seed, batch, "curvlinops-for-pytorch")
    meta.update({
        "batch_size": str(batch), "num_data": str(n),
        "curvlinops_version": pkg_version("curvlinops-for-pytorch"),
        "mc_samples": str(CURV_MC), "mc_seed": str(CURV_MC_SEED),
        "note": ("Matrices are over the flat parameter vector: parameters in state_dict order, "
                 "each flattened row-major. Loss reduced over the whole data set "
                 f"(N={n}, batches of {batch}, last one smaller). hessian_eigvals/ggn_eigvals: "
                 "all eigenvalues of the dense matrix, descending. fisher_mc_vp: MC Fisher "
                 "(FisherMCLinearOperator, mc_samples, seed=mc_seed) times v, approximate. "
                 "jvp = J v as [N, C] (network Jacobian, no loss); vjp = J^T u with u [N, C]."),
    })
    write(os.path.join(FIX, "curvlinops", fname + ".safetensors"), t, meta)

    # ---- checks against the dense reference on the full data set
    ref = Ref(model, x, y, loss, reduction).compute()
    tol = 1e-10
    check(f"{fname} hessian", Hd, ref.hess, tol)
    check(f"{fname} ggn", Gd, ref.ggn, tol)
    g_n = ref.contrib / ref.s  # gradients of the unscaled per-sample losses
    check(f"{fname} ef", Ed, ref.s * g_n.T @ g_n, tol)
    check(f"{fname} grad", torch.cat([g.reshape(-1) for g in gr]), ref.grad, tol)
    check(f"{fname} jvp", t["jvp"], torch.einsum("ncp,p->nc", ref.J, v), tol)
    check(f"{fname} vjp", t["vjp"], torch.einsum("ncp,nc->p", ref.J, u), tol)
    fmc_err = max_rel(t["fisher_mc_vp"], Gd @ v)
    log(f"curvlinops/{fname}: P={P} N={n} batch={batch} top3 eig={t['hessian_eigvals'][:3].tolist()} "
        f"fisher_mc_vp vs ggnvp rel={fmc_err:.2e}")


def make_curvlinops():
    curvlinops_case("tanh_cross_entropy", "linear(5,6),tanh,linear(6,3)", "cross_entropy",
                    "mean", 12, 5)
    curvlinops_case("relu_mse", "linear(5,6),relu,linear(6,3)", "mse", "mean", 12, 5)
    curvlinops_case("sigmoid_bce_with_logits", "linear(5,6),sigmoid,linear(6,2)",
                    "bce_with_logits", "mean", 12, 5)
    curvlinops_case("tanh_cross_entropy_sum", "linear(5,6),tanh,linear(6,3)",
                    "cross_entropy", "sum", 12, 5)
    curvlinops_case("deep_tanh_relu_cross_entropy",
                    "linear(4,5),tanh,linear(5,5),relu,linear(5,3)", "cross_entropy",
                    "mean", 12, 5)


# ========================================================= CNN / ResNet fixtures
#
# Shared by backpack_conv, curvlinops_resnet and the BatchNorm / LayerNorm grad cases.

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
BN_WARMUP_PASSES = 3


def make_image_case(spec, input_shape, loss, n, dtype, seed):
    """Seed torch, build the model (default init), draw ``x ~ N(0,1)`` of shape
    ``[n, *input_shape]`` and ``y``. Then, from the same RNG stream, give every
    normalization layer a non-trivial state: affine weight ``1 + 0.3 z`` and bias ``0.2 z``
    (z standard normal, one tensor at a time in module order); if there is a BatchNorm,
    ``BN_WARMUP_PASSES`` train-mode forward passes (no grad) on fresh inputs
    ``1.5 z + 0.3`` of shape ``[n, *input_shape]`` set its running statistics (so
    ``num_batches_tracked = 3``). Returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_model(spec, dtype)
    x = torch.randn(n, *input_shape, dtype=dtype)
    y = make_targets(loss, n, out_dim(spec), dtype)
    norms = [m for m in model.modules() if isinstance(m, NORM_TYPES)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(1 + 0.3 * torch.randn_like(m.weight))
            m.bias.copy_(0.2 * torch.randn_like(m.bias))
        if any(isinstance(m, BN_TYPES) for m in norms):
            model.train()
            for _ in range(BN_WARMUP_PASSES):
                model(1.5 * torch.randn(n, *input_shape, dtype=dtype) + 0.3)
    model.eval()
    return model, x, y


def autograd_hvp(model, lossfn, x, y, V):
    """Rows of V times the loss Hessian by reverse-over-reverse autograd."""
    ps = list(model.parameters())
    g = torch.autograd.grad(lossfn(model(x), y), ps, create_graph=True)
    flat = torch.cat([gi.reshape(-1) for gi in g])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat @ v, ps, retain_graph=True)])
            for v in V]
    return torch.stack(rows).detach()


def fd_hvp(model, lossfn, x, y, V, eps=1e-5):
    """Rows of V times the loss Hessian by central differences of the gradient."""
    ps = list(model.parameters())

    def grad():
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(lossfn(model(x), y), ps)])

    def shift(v, e):
        with torch.no_grad():
            off = 0
            for p in ps:
                p.add_(e * v[off:off + p.numel()].view_as(p))
                off += p.numel()

    rows = []
    for v in V:
        shift(v, eps)
        gp = grad()
        shift(v, -2 * eps)
        gm = grad()
        shift(v, eps)
        rows.append((gp - gm) / (2 * eps))
    return torch.stack(rows)


def batch_stats_copy(model):
    """Float64 copy whose BatchNorm layers always normalize with the batch statistics
    (running statistics removed, so nothing is updated in place): the train-mode
    reference. Dropout layers stay in eval mode (identity)."""
    m = copy.deepcopy(model).double()
    m.train()
    for mod in m.modules():
        if isinstance(mod, BN_TYPES):
            mod.track_running_stats = False
            mod.running_mean = mod.running_var = mod.num_batches_tracked = None
        if isinstance(mod, nn.Dropout):
            mod.eval()
    return m


def image_meta(meta, input_shape, mode):
    meta["input_shape"] = ",".join(str(d) for d in input_shape)
    meta["mode"] = mode
    return meta


def capture_io(ref, module_name):
    """Input and output of a submodule of ``ref.model`` on ``ref.x``."""
    mod = ref.model.get_submodule(module_name)
    cap = {}

    def grab(m, inp, out):
        cap["a"], cap["z"] = inp[0].detach(), out.detach()

    h = mod.register_forward_hook(grab)
    with torch.no_grad():
        ref.f(ref.theta)
    h.remove()
    return cap["a"], cap["z"]


def jacobian_wrt_output_of(ref, module_name):
    """``(a, z, Jz)``: input ``a`` and output ``z`` of the submodule on ``ref.x``, and
    ``Jz[k, c, n, ...] = d f[k, c] / d z[n, ...]``, the Jacobian of the network output
    ``[N, C]`` w.r.t. ``z`` over the whole batch (so train-mode BatchNorm's coupling of
    the samples is included). Done by adding a zero tensor to the module's output."""
    a, z = capture_io(ref, module_name)
    mod = ref.model.get_submodule(module_name)

    def f(delta):
        h = mod.register_forward_hook(lambda m, i, o: o + delta)
        try:
            return ref.f(ref.theta)
        finally:
            h.remove()

    return a, z, jacrev(f)(torch.zeros_like(z))


def unfold_patches(mod, a):
    """Unfolded input patches of a Conv2d: ``[N, C_in*k*k, L]`` (PyTorch's ``unfold``
    order: channel-major, then kernel row, kernel column; L output positions)."""
    return torch.nn.functional.unfold(a, mod.kernel_size, dilation=mod.dilation,
                                      padding=mod.padding, stride=mod.stride)


def kron_layers(model):
    """Names of the Conv2d / Linear submodules (named_modules order)."""
    return [nm for nm, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# ------------------------------------------------------------ 4. backpack_conv

CONV_MC_SAMPLES = 100


def backpack_conv_kron_reference(ref, name):
    """BackPACK's conv/linear Kronecker convention, rebuilt from dense Jacobians.

    Returns ``(Gs, A)``: ``Gs[n] = sum_l d f_n / d z_{n,:,l}`` ``[N, C, out]`` (the
    Jacobian w.r.t. the layer output summed over the spatial positions l, i.e. the
    Jacobian w.r.t. a bias), and ``A = 1/N sum_n sum_l u_{n,l} u_{n,l}^T`` over the
    unfolded input patches (conv) or ``1/N sum_n a_n a_n^T`` (linear). For a per-sample
    output Hessian ``Hn`` ``[N, C, C]`` the output factor is
    ``B = sum_n Gs_n^T Hn Gs_n``."""
    a, z, Jz = jacobian_wrt_output_of(ref, name)
    n = a.shape[0]
    G = torch.stack([Jz[i, :, i] for i in range(n)])  # [N, C, out, *spatial]
    mod = ref.model.get_submodule(name)
    if isinstance(mod, nn.Conv2d):
        Gs = G.sum(dim=(-2, -1))
        U = unfold_patches(mod, a)
        A = torch.einsum("nil,njl->ij", U, U) / n
    else:
        Gs, A = G, a.T @ a / n
    return Gs, A


def kfra_reference_modules(ref):
    """KFRA output factors as BackPACK computes them, for any top-level Sequential:
    ``M = sum_n H_n`` at the output; going backwards through each module,
    ``M <- 1/N sum_n J_n^T M J_n`` with ``J_n`` the module's per-sample Jacobian
    (flattened, [out, in]; the same for all n for linear / conv / avgpool / flatten).
    A Linear layer's B is M at its output; a Conv2d layer's B sums M's blocks over
    the output positions: ``B[c, d] = sum_{l, l'} M[(c, l), (d, l')]``."""
    model = ref.model
    inputs, h = [], ref.x
    with torch.no_grad():
        for layer in model:
            inputs.append(h)
            h = layer(h)
    M = ref.H_out_n.sum(0)
    res = {}
    for i in reversed(range(len(model))):
        layer, hin = model[i], inputs[i]
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            if isinstance(layer, nn.Conv2d):
                out = layer(hin[:1])
                c, l = out.shape[1], out[0, 0].numel()
                res[i] = M.reshape(c, l, c, l).sum((1, 3))
            else:
                res[i] = M

        def f1(t, layer=layer):
            return layer(t.unsqueeze(0)).reshape(-1)

        Js = torch.stack([jacrev(f1)(hin[k]).reshape(-1, hin[k].numel())
                          for k in range(hin.shape[0])])
        M = torch.einsum("nki,kl,nlj->ij", Js, M, Js) / hin.shape[0]
    return res


def backpack_conv_case(fname, spec, input_shape, loss, n, dtype, known_wrong=None):
    """``known_wrong``: {quantity: reason} that BackPACK returns but gets wrong here; each
    is checked to differ from the reference, then left out and listed in ``skipped``."""
    known_wrong = known_wrong or {}
    from backpack import backpack, extend
    from torch.distributions import Categorical, Normal

    reduction = "mean"
    seed = name_seed("backpack_conv/" + fname)
    mc_seed = seed + 1
    model, x, y = make_image_case(spec, input_shape, loss, n, dtype, seed)
    t = {"x": x, "y": y, **param_tensors(model)}
    clean = copy.deepcopy(model)  # un-hooked copy for the reference computation
    model = extend(model)
    lossfn = extend(make_loss(loss, reduction))
    params = dict(model.named_parameters())

    L = lossfn(model(x), y)
    for nm, g in zip(params, torch.autograd.grad(L, list(params.values()))):
        t[f"grad/{nm}"] = g
    t["loss"] = L.detach().reshape(1)

    exts = [(q, (lambda f=f: f(mc_samples=CONV_MC_SAMPLES)) if mc else f, attr, mc)
            for q, f, attr, mc in backpack_exts_raw()]
    got, skipped = {}, []
    for qname, factory, attr, is_mc in exts:
        for p in params.values():
            p.grad = None
            if hasattr(p, attr):
                delattr(p, attr)
        try:
            if is_mc:
                torch.manual_seed(mc_seed)
            with backpack(factory()):
                lossfn(model(x), y).backward()
            vals = {nm: getattr(p, attr) for nm, p in params.items()}
        except Exception as e:  # BackPACK refuses this configuration
            full = str(e)
            m = re.search(r"extension for Module <class '([\w.]+)'>", full)
            if m:
                msg = f"no BackPACK extension for {m.group(1).rsplit('.', 1)[-1]}"
            elif full:
                msg = f"{type(e).__name__}: {full.splitlines()[0][:160]}"
            else:
                msg = f"{type(e).__name__} (empty message) raised by BackPACK"
            skipped.append(f"{qname} ({msg})")
            continue
        got[qname] = vals
        for nm, v in vals.items():
            if isinstance(v, (list, tuple)):
                if len(v) == 2:
                    t[f"{qname}/{nm}/out"], t[f"{qname}/{nm}/in"] = v[0], v[1]
                elif len(v) == 1:
                    t[f"{qname}/{nm}/out"] = v[0]
                else:
                    raise RuntimeError(f"unexpected factor count {len(v)}")
            else:
                t[f"{qname}/{nm}"] = v

    # The targets BackPACK sampled: seeded as above, the forward pass draws nothing and
    # the loss module's sampling is the first use of the RNG in backward.
    mc_used = any(q in got for q in ("diag_ggn_mc", "kfac"))
    if mc_used:
        torch.manual_seed(mc_seed)
        with torch.no_grad():
            out = clean(x)
            if loss == "cross_entropy":
                mc_targets = Categorical(torch.softmax(out, dim=1)).sample(
                    torch.Size([CONV_MC_SAMPLES]))
            else:
                mc_targets = Normal(out, torch.tensor(math.sqrt(0.5))).sample(
                    torch.Size([CONV_MC_SAMPLES]))
        t["mc_targets"] = mc_targets

    meta = base_meta(spec, loss, reduction, dtype, seed, n, "backpack-for-pytorch")
    image_meta(meta, input_shape, "eval")
    meta.update({
        "backpack_version": pkg_version("backpack-for-pytorch"),
        "quantities": ",".join(got),
        "skipped": "; ".join(skipped),
        "mc_samples": str(CONV_MC_SAMPLES),
        "mc_seed": str(mc_seed),
        "mc_targets": ("mc_targets holds the targets BackPACK sampled for diag_ggn_mc and kfac "
                       "(both draw the same ones): int64 [mc_samples, N] classes for "
                       "cross_entropy, [mc_samples, N, C] Gaussian targets (mean f, variance "
                       "1/2) for mse. With them the MC quantities are exact: the output "
                       "Hessian of sample n is s/M sum_m g_nm g_nm^T, g_nm = grad_f l(f_n, "
                       "target[m, n]) of the unscaled per-sample loss" if mc_used else
                       "no MC quantity"),
        "kron_convention": (
            "BackPACK's, [B, A] for weights, [B] for biases, B stored as <q>/<W>/out and "
            "A as <q>/<W>/in (no bias row or column: a bias has only /out, equal to the "
            "weight's B); block ~ kron(B, A) over row-major vec(W). Conv2d: A = 1/N "
            "sum_n sum_l u_nl u_nl^T over unfolded input patches u_nl (PyTorch unfold "
            "order: in-channel, kernel row, kernel column; l = output position), "
            "[C_in*k*k, C_in*k*k], divided by N only (not by the number of positions). "
            "kflr B = sum_n Gs_n^T H_n Gs_n with Gs_n = sum_l d f_n / d z_{n,:,l} (the "
            "Jacobian summed over positions BEFORE the outer product, so B is the exact "
            "GGN block of the bias); kfac B: the same with H_n replaced by the MC "
            "estimate from mc_targets; kfra B = sum over position blocks of the "
            "backpropagated [C_out*L, C_out*L] matrix, B[c, d] = sum_{l, l'} "
            "M[(c, l), (d, l')]. Linear: as in tests/fixtures/backpack."),
        "note": ("BackPACK outputs as returned; model in eval mode (BatchNorm with running "
                 "statistics, dropout = identity); see scripts/reference/README.md"),
    })
    # ---- independent checks (the file is written after them)
    ref = Ref(clean, x, y, loss, reduction).compute()
    tol = 1e-10 if dtype == torch.float64 else 5e-4
    sp = ref.split
    c = ref.contrib
    errs = {}
    exp = {
        "batch_grad": sp(c),
        "batch_l2": {nm: (v.reshape(n, -1) ** 2).sum(1) for nm, v in sp(c).items()},
        "sum_grad_squared": sp((c**2).sum(0)),
        "variance": sp((c**2).mean(0) - c.mean(0) ** 2),
        "diag_ggn_exact": sp(torch.diagonal(ref.ggn)),
        "batch_diag_ggn_exact": sp(torch.diagonal(ref.ggn_n, dim1=1, dim2=2)),
        "diag_hessian": sp(torch.diagonal(ref.hess)),
    }
    check(f"{fname} grad", torch.cat([t[f"grad/{nm}"].reshape(-1) for nm in params]),
          ref.grad, tol)
    # MC output Hessians from the stored targets
    Hmc = None
    if mc_used:
        out64 = ref.f(ref.theta).detach()
        s = ref.s
        sum_loss = make_loss(loss, "sum")
        gs = []
        for m in range(CONV_MC_SAMPLES):
            tg = mc_targets[m] if loss == "cross_entropy" else mc_targets[m].double()
            gs.append(fgrad(lambda o: sum_loss(o, tg))(out64))  # [N, C] unscaled
        gs = torch.stack(gs)  # [M, N, C]
        Hmc = s / CONV_MC_SAMPLES * torch.einsum("mnc,mnd->ncd", gs, gs)
        exp["diag_ggn_mc"] = sp(torch.einsum("ncp,ncd,ndp->p", ref.J, Hmc, ref.J))
    for q, want in exp.items():
        if q in got:
            scale = {nm: (exp["sum_grad_squared"][nm].abs().max() if q == "variance" else None)
                     for nm in want}
            if q in known_wrong:
                err = max(max_rel(got[q][nm], want[nm], scale[nm]) for nm in want)
                assert err > 100 * tol, f"{fname} {q} is right now (rel err {err:.1e})"
                del got[q]
                for k in [k for k in t if k.startswith(q + "/")]:
                    del t[k]
                skipped.append(f"{q} ({known_wrong[q]}; rel. error {err:.2f})")
                continue
            errs[q] = max(check(f"{fname} {q}/{nm}", got[q][nm], want[nm], tol, scale[nm])
                          for nm in want)
    assert not set(known_wrong) - {s_.split(" ")[0] for s_ in skipped}, fname
    layers = {int(nm.split(".")[0]) for nm in kron_layers(clean)}
    kq = [q for q in ("kflr", "kfac", "kfra") if q in got]
    if kq:
        kref = {i: backpack_conv_kron_reference(ref, str(i)) for i in layers}
        Bref = {"kflr": {i: torch.einsum("nco,ncd,ndp->op", Gs, ref.H_out_n, Gs)
                         for i, (Gs, _) in kref.items()}}
        if Hmc is not None:
            Bref["kfac"] = {i: torch.einsum("nco,ncd,ndp->op", Gs, Hmc, Gs)
                            for i, (Gs, _) in kref.items()}
        if "kfra" in got:
            Bref["kfra"] = kfra_reference_modules(ref)
        for q in kq:
            e = 0.0
            for i in sorted(layers):
                B, A = Bref[q][i], kref[i][1]
                e = max(e, check(f"{fname} {q} {i} B", got[q][f"{i}.weight"][0], B, tol))
                e = max(e, check(f"{fname} {q} {i} A", got[q][f"{i}.weight"][1], A, tol))
                if f"{i}.bias" in got[q]:
                    e = max(e, check(f"{fname} {q} {i} bias", got[q][f"{i}.bias"][0], B, tol))
                if q == "kflr" and f"{i}.bias" in got[q]:  # B is the bias' exact GGN block
                    j = ref.names.index(f"{i}.bias")
                    a_, b_ = ref.offsets[j], ref.offsets[j + 1]
                    e = max(e, check(f"{fname} kflr {i} = bias GGN block",
                                     got[q][f"{i}.bias"][0], ref.ggn[a_:b_, a_:b_], tol))
            errs[q] = e
    approx = {}
    if "diag_ggn_mc" in got:
        approx["diag_ggn_mc"] = max(max_rel(got["diag_ggn_mc"][nm], exp["diag_ggn_exact"][nm])
                                    for nm in params)
    if "kfac" in got and "kflr" in got:
        approx["kfac"] = max(max_rel(got["kfac"][f"{i}.weight"][0], got["kflr"][f"{i}.weight"][0])
                             for i in layers)
    assert "batch_grad" in got, fname
    meta["quantities"], meta["skipped"] = ",".join(got), "; ".join(skipped)
    write(os.path.join(FIX, "backpack_conv", fname + ".safetensors"), t, meta)
    log(f"backpack_conv/{fname}: P={ref.theta.numel()} N={n} {DTYPE_NAME[dtype]} got={list(got)} "
        f"exact_errs={ {k: f'{v:.1e}' for k, v in errs.items()} } "
        f"mc_vs_exact={ {k: f'{v:.2e}' for k, v in approx.items()} } skipped={skipped}")


def backpack_exts_raw():
    """As backpack_exts, with the MC factories left unapplied (mc_samples chosen here)."""
    from backpack.extensions import KFAC, DiagGGNMC

    out = []
    for q, f, attr, mc in backpack_exts():
        if q == "diag_ggn_mc":
            f = DiagGGNMC
        elif q == "kfac":
            f = KFAC
        out.append((q, f, attr, mc))
    return out


BACKPACK_CONV_NETS = {
    # name: (spec, input_shape)
    "maxpool": ("conv2d(1,2,k=3,p=1),relu,maxpool2d(3,s=2,p=1),flatten,linear(18,3)", (1, 6, 6)),
    "stride_dilation_nobias": (
        "conv2d(2,3,k=3,s=2,p=1,d=2,bias=false),sigmoid,conv2d(3,2,k=2),relu,flatten,"
        "linear(8,3)", (2, 7, 7)),
    "avgpool_pad": ("conv2d(1,2,k=3),tanh,avgpool2d(3,s=2,p=1),flatten,linear(8,3)", (1, 6, 6)),
    "groups_avgpool": (
        "conv2d(2,4,k=3,s=2,p=1,d=2,groups=2),tanh,avgpool2d(2,s=1),flatten,linear(16,3)",
        (2, 7, 7)),
    "two_conv_adaptive": (
        "conv2d(1,3,k=3,bias=false),relu,avgpool2d(3,s=1,p=1),conv2d(3,2,k=1),sigmoid,"
        "adaptiveavgpool2d(2),flatten,linear(8,3)", (1, 6, 6)),
    "adaptive_5to3": ("conv2d(2,3,k=3),relu,adaptiveavgpool2d(3),flatten,linear(27,3)",
                      (2, 7, 7)),
    "batchnorm_dropout_eval": (
        "conv2d(1,2,k=3,s=2),batchnorm2d(2),relu,dropout(0.25),flatten,linear(8,4),"
        "batchnorm1d(4),tanh,linear(4,3)", (1, 6, 6)),
}


def make_backpack_conv():
    N = BACKPACK_CONV_NETS
    ce = "cross_entropy"
    backpack_conv_case("maxpool_cross_entropy_n3", *N["maxpool"], ce, 3, torch.float32)
    backpack_conv_case("maxpool_cross_entropy_n3_f64", *N["maxpool"], ce, 3, torch.float64)
    backpack_conv_case("maxpool_mse_n5", *N["maxpool"], "mse", 5, torch.float32)
    backpack_conv_case("stride_dilation_nobias_n3", *N["stride_dilation_nobias"], ce, 3,
                       torch.float32)
    backpack_conv_case("stride_dilation_nobias_n3_f64", *N["stride_dilation_nobias"], ce, 3,
                       torch.float64)
    backpack_conv_case("avgpool_pad_n5", *N["avgpool_pad"], ce, 5, torch.float32)
    backpack_conv_case("groups_avgpool_n5", *N["groups_avgpool"], ce, 5, torch.float32,
                       known_wrong={"batch_l2": "BackPACK's BatchL2Grad ignores groups on "
                                    "Conv2d weights: not the squared norm of batch_grad"})
    backpack_conv_case("two_conv_adaptive_n1", *N["two_conv_adaptive"], ce, 1, torch.float32)
    backpack_conv_case("adaptive_5to3_n3", *N["adaptive_5to3"], ce, 3, torch.float32)
    backpack_conv_case("batchnorm_dropout_eval_n5", *N["batchnorm_dropout_eval"], ce, 5,
                       torch.float32)


# -------------------------------------------------------- 5. curvlinops_resnet

RESNET_SPEC = (
    "conv2d(1,4,k=3,p=1),batchnorm2d(4),relu,"
    "residual(conv2d(4,4,k=3,p=1),batchnorm2d(4),relu,conv2d(4,4,k=3,p=1),batchnorm2d(4)),relu,"
    "residual(conv2d(4,8,k=3,s=2,p=1),batchnorm2d(8)|conv2d(4,8,k=1,s=2,bias=false),"
    "batchnorm2d(8)),relu,adaptiveavgpool2d(1),flatten,linear(8,3)")
RESNET_INPUT = (1, 8, 8)
RESNET_N = 5
RESNET_K = 2  # number of random vectors
KFAC_MC_SAMPLES = 4
KFAC_MC_SEED = 2024


def curvlinops_kfac_reference(ref, name, per_col):
    """curvlinops' KFAC factors (kfac_approx='expand', one batch holding all N samples,
    mean reduction) of the Conv2d / Linear submodule ``name``, from dense Jacobians.

    ``per_col`` ``[K, N, C]`` are the vectors curvlinops backpropagates from the network
    output (all samples at once), ``g_k = J_z^T per_col[k]`` the resulting gradients
    w.r.t. the layer output z; then ``B = N * sum_k sum_{n,l} g_k[n,:,l] g_k[n,:,l]^T``
    (``N`` = curvlinops' mean-reduction correction ``(N*T)^2 / (N_data*T)`` with one
    batch, T = 1 loss term per sample; MC divides by mc_samples on top) and
    ``A = 1/(N*L) sum_{n,l} u_{n,l} u_{n,l}^T`` over the unfolded patches (L output
    positions; L = 1 for Linear)."""
    a, z, Jz = jacobian_wrt_output_of(ref, name)
    n = a.shape[0]
    mod = ref.model.get_submodule(name)
    g = torch.einsum("vmc,mc...->v...", per_col, Jz)  # [K, N, out, *spatial]
    if isinstance(mod, nn.Conv2d):
        g = g.flatten(3).transpose(2, 3).reshape(g.shape[0], -1, g.shape[2])  # [K, N*L, out]
        U = unfold_patches(mod, a)  # [N, D, L]
        L = U.shape[-1]
        A = torch.einsum("nil,njl->ij", U, U) / (n * L)
    else:
        A = a.T @ a / n
    B = n * torch.einsum("kri,krj->ij", g, g)
    return B, A, Jz


def curvlinops_resnet_case(mode):
    from curvlinops import GGNLinearOperator, HessianLinearOperator, KFACLinearOperator

    fname = f"resnet_{mode}"
    seed = name_seed("curvlinops_resnet/resnet")  # same model and data in both modes
    loss, reduction, dtype, n = "cross_entropy", "mean", torch.float64, RESNET_N
    model, x, y = make_image_case(RESNET_SPEC, RESNET_INPUT, loss, n, dtype, seed)
    t = {"x": x, "y": y, **param_tensors(model)}  # buffers as before any curvlinops pass
    torch.manual_seed(seed + 1)
    P = sum(p.numel() for p in model.parameters())
    V = torch.randn(RESNET_K, P, dtype=dtype)
    lossfn = make_loss(loss, reduction)
    data = [(x, y)]

    def fresh():
        """A copy for each operator. Train mode: curvlinops 3.0.1's torch.func operators
        cannot update BatchNorm's running statistics in place, so they get a copy with
        track_running_stats=False (buffers removed): the same function of the parameters
        (normalization with the batch statistics), and the stored buffers stay untouched."""
        if mode == "train":
            return batch_stats_copy(model)
        return copy.deepcopy(model).eval()

    m = fresh()
    ps = list(m.parameters())
    H = HessianLinearOperator(m, lossfn, ps, data)
    G = GGNLinearOperator(m, lossfn, ps, data)
    hvp, ggnvp = (H @ V.T).T, (G @ V.T).T
    gr, L = H.gradient_and_loss()
    for nm, g in zip(dict(model.named_parameters()), gr):
        t[f"grad/{nm}"] = g
    t["loss"] = L.reshape(1)
    if mode == "train":
        # curvlinops' Hessian (torch.func, forward over reverse) disagrees with
        # central differences of the train-mode gradient by ~15% here, while
        # autograd's reverse over reverse agrees with them to 1e-7: store the
        # latter as the reference and curvlinops' for the record.
        t["hvp_curvlinops"] = hvp
        hvp = autograd_hvp(batch_stats_copy(model), lossfn, x, y, V)
        check(f"{fname} hvp (finite differences)", fd_hvp(batch_stats_copy(model), lossfn, x, y, V),
              hvp, 1e-6)
    t.update({"v": V, "hvp": hvp, "ggnvp": ggnvp})

    # KFAC on the Conv2d / Linear parameters (curvlinops refuses BatchNorm's)
    klayers = kron_layers(model)
    kparams = [f"{ln}.{pn}" for ln in klayers
               for pn, _ in model.get_submodule(ln).named_parameters()]
    names = [nm for nm, _ in model.named_parameters()]
    offs = dict(zip(names, np.cumsum([0] + [p.numel() for p in model.parameters()]).tolist()))
    kidx = torch.cat([torch.arange(offs[nm], offs[nm] + dict(model.named_parameters())[nm].numel())
                      for nm in kparams])
    Vk = V[:, kidx]
    kfac, kfac_vp = {}, {}
    for q, ftype, mc in (("kfac_type2", "type-2", 1), ("kfac_mc", "mc", KFAC_MC_SAMPLES)):
        mk = fresh()
        kp = [dict(mk.named_parameters())[nm] for nm in kparams]
        K = KFACLinearOperator(mk, lossfn, kp, data, fisher_type=ftype, mc_samples=mc,
                               seed=KFAC_MC_SEED, kfac_approx="expand",
                               separate_weight_and_bias=True)
        # the factors are computed on the first product (calling compute_kronecker_factors
        # again would add a second copy to them)
        kfac_vp[q] = (K @ Vk.T).T  # checked below, not stored
        st = K.state_dict()
        kfac[q] = (st["input_covariances"], st["gradient_covariances"])
        for ln in klayers:
            t[f"{q}/{ln}.weight/out"] = st["gradient_covariances"][ln]
            if q == "kfac_type2":  # kfac_mc's A is the same (checked), not stored twice
                t[f"{q}/{ln}.weight/in"] = st["input_covariances"][ln]
            if f"{ln}.bias" in kparams:
                t[f"{q}/{ln}.bias/out"] = st["gradient_covariances"][ln]
    # the labels curvlinops drew for kfac_mc (its generator, seeded with KFAC_MC_SEED)
    gen = torch.Generator().manual_seed(KFAC_MC_SEED)
    with torch.no_grad():
        probs = fresh()(x).softmax(dim=1)
        labels = torch.stack([probs.multinomial(1, generator=gen).squeeze(-1)
                              for _ in range(KFAC_MC_SAMPLES)])
    t["kfac_mc_labels"] = labels

    meta = base_meta(RESNET_SPEC, loss, reduction, dtype, seed, n, "curvlinops-for-pytorch")
    image_meta(meta, RESNET_INPUT, mode)
    meta.update({
        "curvlinops_version": pkg_version("curvlinops-for-pytorch"),
        "batchnorm": mode,
        "num_vectors": str(RESNET_K),
        "kfac_params": ",".join(kparams),
        "kfac_approx": "expand",
        "kfac_separate_weight_and_bias": "true",
        "kfac_num_per_example_loss_terms": "1",
        "mc_samples": str(KFAC_MC_SAMPLES),
        "mc_seed": str(KFAC_MC_SEED),
        "note": (
            f"one batch of all N={n} samples. BatchNorm {mode} mode: "
            + ("running statistics (param/*.running_*)" if mode == "eval" else
               "batch statistics over the N samples (running statistics unused; they are "
               "the values before any pass)")
            + ". v, hvp, ggnvp [num_vectors, P] over the flat parameter vector "
            "(model.parameters() order, each row-major). kfac_type2 (FisherType.TYPE2) and "
            "kfac_mc (FisherType.MC, mc_samples, seed=mc_seed, labels drawn in "
            "kfac_mc_labels [mc_samples, N]) on the parameters of kfac_params: "
            "<q>/<layer>.weight/out = gradient covariance B [C_out, C_out], "
            "kfac_type2/<layer>.weight/in = input covariance A [C_in*k*k, C_in*k*k] (no bias "
            "row: separate_weight_and_bias; kfac_mc's A is the same and not stored), "
            "<q>/<layer>.bias/out = the same B. KFAC on a weight = kron(B, A) over "
            "row-major vec(W), B alone on a bias. Scaling: see scripts/reference/README.md."),
    })
    write(os.path.join(FIX, "curvlinops_resnet", fname + ".safetensors"), t, meta)

    # ---- checks against dense float64 references
    refmodel = batch_stats_copy(model) if mode == "train" else model
    ref = Ref(refmodel, x, y, loss, reduction).compute()
    tol = 1e-10
    if mode == "eval":  # torch.func's train-mode Hessian is the one in question
        check(f"{fname} hvp", hvp, V @ ref.hess.T, tol)
    check(f"{fname} ggnvp", ggnvp, V @ ref.ggn.T, tol)
    check(f"{fname} grad", torch.cat([g.reshape(-1) for g in gr]), ref.grad, tol)
    check(f"{fname} loss", t["loss"], ref.L(ref.theta).reshape(1).detach(), tol)
    out = ref.f(ref.theta).detach()
    p = out.softmax(1)
    # curvlinops' per-sample square root of the CE Hessian, S = (I - p 1^T) diag(sqrt p),
    # scaled by 1/N (mean); column c of every sample is backpropagated at once
    S = (torch.diag_embed(p.sqrt()) - p.unsqueeze(2) * p.sqrt().unsqueeze(1)) / n
    cols = S.permute(2, 0, 1)  # [C, N, C]
    check(f"{fname} S S^T = H", torch.einsum("nck,ndk->ncd", S, S) * n, ref.H_out_n, 1e-12)
    onehot = torch.nn.functional.one_hot(labels, p.shape[1]).double()  # [M, N, C]
    mc_cols = (p.unsqueeze(0) - onehot) / n  # d (mean CE at sampled labels) / d f
    errs = {}
    for ln in klayers:
        B2, A, Jz = curvlinops_kfac_reference(ref, ln, cols)
        Bmc, _, _ = curvlinops_kfac_reference(ref, ln, mc_cols)
        Bmc = Bmc / KFAC_MC_SAMPLES
        e = max(check(f"{fname} type2 {ln} B", kfac["kfac_type2"][1][ln], B2, tol),
                check(f"{fname} type2 {ln} A", kfac["kfac_type2"][0][ln], A, tol),
                check(f"{fname} mc {ln} B", kfac["kfac_mc"][1][ln], Bmc, tol),
                check(f"{fname} mc {ln} A", kfac["kfac_mc"][0][ln], A, tol))
        if mode == "eval":  # per-sample network: B = sum_{n,l} G^T H_n G for any sqrt
            Gd = torch.stack([Jz[i, :, i] for i in range(n)])  # [N, C, out, ...]
            Gd = Gd.flatten(3) if Gd.dim() > 3 else Gd.unsqueeze(-1)
            Bh = torch.einsum("ncol,ncd,ndpl->op", Gd, ref.H_out_n, Gd)
            e = max(e, check(f"{fname} type2 {ln} B = sum G^T H G", kfac["kfac_type2"][1][ln],
                             Bh, tol))
        errs[ln] = e
    # KFAC products: block-diagonal kron(B, A) on row-major vec(W), B alone on biases
    for q in ("kfac_type2", "kfac_mc"):
        A_, B_ = kfac[q]
        o = 0
        want = torch.zeros_like(Vk)
        for nm in kparams:
            ln, pn = nm.rsplit(".", 1)
            k = dict(model.named_parameters())[nm].numel()
            blk = torch.kron(B_[ln], A_[ln]) if pn == "weight" else B_[ln]
            want[:, o:o + k] = Vk[:, o:o + k] @ blk.T
            o += k
        check(f"{fname} {q}_vp", kfac_vp[q], want, tol)
    log(f"curvlinops_resnet/{fname}: P={P} N={n} kfac layers={klayers} "
        f"max kfac err={max(errs.values()):.1e}")


def make_curvlinops_resnet():
    curvlinops_resnet_case("eval")
    curvlinops_resnet_case("train")


# ------------------------------------------------ 6. grad with BatchNorm / LayerNorm

BN_SPEC = ("conv2d(1,3,k=3),batchnorm2d(3),relu,flatten,linear(48,5),batchnorm1d(5),relu,"
           "linear(5,3)")
LN_SPEC = ("conv2d(1,2,k=3),layernorm(4),relu,flatten,linear(32,5),layernorm(5),tanh,"
           "linear(5,3)")
NORM_INPUT = (1, 6, 6)
TRAIN_LR = 0.1


def fd_check(fname, ref, grads):
    eps = 1e-6
    th = ref.theta
    fd = torch.zeros_like(th)
    with torch.no_grad():
        for i in range(th.numel()):
            e = torch.zeros_like(th)
            e[i] = eps
            fd[i] = (ref.L(th + e) - ref.L(th - e)) / (2 * eps)
    return check(f"{fname} grad vs FD", grads, fd, 1e-6)


def norm_grad_case(fname, spec, mode, dtype, n=8, step=False):
    """Gradient (and with ``step`` one SGD step) on a net with normalization layers."""
    seed = name_seed("grad_norm/" + fname)
    loss, reduction = "cross_entropy", "mean"
    model, x, y = make_image_case(spec, NORM_INPUT, loss, n, dtype, seed)
    t = {"x": x, "y": y, **param_tensors(model)}
    work = copy.deepcopy(model)
    work.train(mode == "train")
    lossfn = make_loss(loss, reduction)
    opt = torch.optim.SGD(work.parameters(), lr=TRAIN_LR)
    opt.zero_grad()
    L = lossfn(work(x), y)
    L.backward()
    names = [nm for nm, _ in work.named_parameters()]
    grads = {nm: p.grad.detach().clone() for nm, p in work.named_parameters()}
    t["loss"] = L.detach().reshape(1)
    for nm, g in grads.items():
        t[f"grad/{nm}"] = g
    meta = base_meta(spec, loss, reduction, dtype, seed, n, "torch.autograd")
    image_meta(meta, NORM_INPUT, mode)
    if step:
        opt.step()
        for k, v in work.state_dict().items():
            t[f"updated/{k}"] = v.detach().clone()
        meta.update({
            "optimizer": "sgd", "lr": repr(TRAIN_LR), "momentum": "0", "weight_decay": "0",
            "bn_momentum": "0.1", "bn_eps": "1e-05",
            "note": ("one training step: model.train(), loss = CE(model(x), y), backward, "
                     "torch.optim.SGD(lr).step(). param/* = state before the step (weights "
                     "and buffers), grad/* = d loss / d param at that state, updated/* = "
                     "state_dict after the step: weights w - lr*grad, BatchNorm running_mean "
                     "= 0.9 old + 0.1 batch mean, running_var = 0.9 old + 0.1 unbiased batch "
                     "variance (divisor count-1; count = N*H*W for batchnorm2d, N for "
                     "batchnorm1d), num_batches_tracked + 1; forward normalized with the "
                     "biased batch variance"),
        })
    else:
        meta["note"] = (f"grad/<name> = d loss / d param with the model in {mode} mode "
                        + ("(BatchNorm with the running statistics in param/*)"
                           if mode == "eval" else "") + "; loss has shape [1]")
    write(os.path.join(FIX, "grad_norm", fname + ".safetensors"), t, meta)

    # ---- checks
    refmodel = batch_stats_copy(model) if mode == "train" else model
    ref = Ref(refmodel, x, y, loss, reduction)
    flat = torch.cat([grads[nm].reshape(-1) for nm in names])
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    check(f"{fname} grad vs ref", flat, torch.func.grad(ref.L)(ref.theta), tol)
    fd_err = fd_check(fname, ref, flat) if dtype == torch.float64 else None
    if step:
        sd0 = model.state_dict()
        for nm in names:
            check(f"{fname} sgd {nm}", t[f"updated/{nm}"], sd0[nm] - TRAIN_LR * grads[nm],
                  1e-14 if dtype == torch.float64 else 1e-6)
        # running statistics from the BatchNorm inputs of an independent forward pass
        for bn_name, mod in model.named_modules():
            if not isinstance(mod, BN_TYPES):
                continue
            a, _ = capture_io(ref, bn_name)
            dims = (0, 2, 3) if a.dim() == 4 else (0,)
            cnt = a.numel() // a.shape[1]
            mean = a.mean(dims)
            var_unb = ((a - mean.reshape(1, -1, *[1] * (a.dim() - 2))) ** 2).sum(dims) / (cnt - 1)
            stol = 1e-12 if dtype == torch.float64 else 1e-5
            check(f"{fname} {bn_name} running_mean", t[f"updated/{bn_name}.running_mean"],
                  0.9 * sd0[f"{bn_name}.running_mean"].double() + 0.1 * mean, stol)
            check(f"{fname} {bn_name} running_var", t[f"updated/{bn_name}.running_var"],
                  0.9 * sd0[f"{bn_name}.running_var"].double() + 0.1 * var_unb, stol)
            nb = t[f"updated/{bn_name}.num_batches_tracked"]
            assert nb.item() == sd0[f"{bn_name}.num_batches_tracked"].item() + 1, (fname, bn_name)
    log(f"grad_norm/{fname}: P={ref.theta.numel()} N={n} mode={mode} fd_rel_err={fd_err}")


def make_grad_norm():
    norm_grad_case("bn_train_step", BN_SPEC, "train", torch.float64, step=True)
    norm_grad_case("bn_train_step_f32", BN_SPEC, "train", torch.float32, step=True)
    norm_grad_case("bn_eval", BN_SPEC, "eval", torch.float64)
    norm_grad_case("layernorm", LN_SPEC, "eval", torch.float64)


def verify_all():
    """Load every fixture back and check the format invariants."""
    nfiles = 0
    for sub in ("grad", "backpack", "curvlinops", "grad_norm", "backpack_conv",
                "curvlinops_resnet"):
        d = os.path.join(FIX, sub)
        if not os.path.isdir(d):
            continue
        for fn in sorted(os.listdir(d)):
            path = os.path.join(d, fn)
            t = load_file(path)
            with safe_open(path, "pt") as fh:
                meta = fh.metadata()
            for k in ("spec", "loss", "reduction", "dtype", "seed", "batch_size", "num_data"):
                assert k in meta, (path, k)
            dt = {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
            n = int(meta["num_data"])
            if "input_shape" in meta:
                x_shape = (n, *(int(v) for v in meta["input_shape"].split(",")))
                d_out = out_dim(meta["spec"])
            else:
                d_in, d_out = io_dims(meta["spec"])
                x_shape = (n, d_in)
            assert t["x"].dtype == dt and tuple(t["x"].shape) == x_shape, path
            if meta["loss"] == "cross_entropy":
                assert t["y"].dtype == torch.int64 and tuple(t["y"].shape) == (n,), path
            else:
                assert t["y"].dtype == dt and tuple(t["y"].shape) == (n, d_out), path
            ref = build_model(meta["spec"], dt)
            shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
            pshapes = {k: tuple(v.shape) for k, v in ref.named_parameters()}
            P = sum(int(np.prod(s)) for s in pshapes.values())
            assert {k[6:] for k in t if k.startswith("param/")} == set(shapes), path
            if "input_shape" in meta:  # the state_dict runs on the stored inputs
                ref.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("param/")})
                ref.eval()
                with torch.no_grad():
                    assert tuple(ref(t["x"]).shape) == (n, d_out), path
            for k, v in t.items():
                assert v.dtype in (dt, torch.int64), (path, k)
                parts = k.split("/")
                if len(parts) == 1:
                    continue
                q, nm, fac = parts[0], parts[1], (parts[2] if len(parts) > 2 else None)
                shp = shapes[nm]
                if q == "grad":
                    assert nm in pshapes, (path, k)
                if fac is not None:
                    side = shp[0] if fac == "out" else int(np.prod(shp[1:]))
                    assert tuple(v.shape) == (side, side), (path, k)
                elif q in ("batch_grad", "batch_diag_ggn_exact"):
                    assert tuple(v.shape) == (n, *shp), (path, k)
                elif q == "batch_l2":
                    assert tuple(v.shape) == (n,), (path, k)
                else:
                    assert tuple(v.shape) == shp, (path, k)
            if sub == "curvlinops":
                for k in ("hessian", "ggn", "ef"):
                    assert tuple(t[k].shape) == (P, P), (path, k)
                for k in ("v", "hvp", "ggnvp", "efvp", "fisher_mc_vp", "hessian_eigvals",
                          "ggn_eigvals", "vjp"):
                    assert tuple(t[k].shape) == (P,), (path, k)
            if sub == "curvlinops_resnet":
                kv = int(meta["num_vectors"])
                for k in ("v", "hvp", "ggnvp"):
                    assert tuple(t[k].shape) == (kv, P), (path, k)
                for nm in meta["kfac_params"].split(","):
                    assert f"kfac_type2/{nm}/out" in t and f"kfac_mc/{nm}/out" in t, (path, nm)
                    if nm.endswith(".weight"):
                        assert f"kfac_type2/{nm}/in" in t, (path, nm)
                assert tuple(t["kfac_mc_labels"].shape) == (int(meta["mc_samples"]), n), path
            if "mc_targets" in t:
                mc = int(meta["mc_samples"])
                want = (mc, n) if meta["loss"] == "cross_entropy" else (mc, n, d_out)
                assert tuple(t["mc_targets"].shape) == want, path
            nfiles += 1
    print(f"verified {nfiles} fixture files", flush=True)


GROUPS = {
    "grad": lambda: make_grad(),
    "grad_norm": lambda: make_grad_norm(),
    "backpack": lambda: make_backpack(),
    "backpack_conv": lambda: make_backpack_conv(),
    "curvlinops": lambda: make_curvlinops(),
    "curvlinops_resnet": lambda: make_curvlinops_resnet(),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None,
                    help="comma-separated subset of: " + ", ".join(GROUPS))
    args = ap.parse_args()
    only = list(GROUPS) if args.only is None else args.only.split(",")
    bad = [g for g in only if g not in GROUPS]
    if bad:
        ap.error(f"unknown group(s) {bad}; choose from {list(GROUPS)}")
    torch.set_num_threads(1)  # bitwise reproducible reductions
    for g in GROUPS:  # fixed order
        if g in only:
            GROUPS[g]()
    verify_all()
    total, new = 0, 0
    for d, _, files in os.walk(FIX):
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        total += size
        if os.path.basename(d) in ("grad_norm", "backpack_conv", "curvlinops_resnet"):
            new += size
    print(f"fixtures total size: {total / 1024:.1f} KiB (CNN/ResNet/norm ones: "
          f"{new / 1024:.1f} KiB)", flush=True)


if __name__ == "__main__":
    main()
