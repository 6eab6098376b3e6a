#!/usr/bin/env python3
"""Regenerate secondo's committed reference fixtures (PyTorch, BackPACK, curvlinops).

Usage (from the repository root)::

    .venv/bin/python scripts/reference/make_fixtures.py [--only grad|backpack|curvlinops]

Writes ``tests/fixtures/{grad,backpack,curvlinops}/*.safetensors``. Every file is
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
import os
import re
import struct
import sys
import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch
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
    name_seed,
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


def verify_all():
    """Load every fixture back and check the format invariants."""
    nfiles = 0
    for sub in ("grad", "backpack", "curvlinops"):
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
            d_in, d_out = io_dims(meta["spec"])
            assert t["x"].dtype == dt and tuple(t["x"].shape) == (n, d_in), path
            if meta["loss"] == "cross_entropy":
                assert t["y"].dtype == torch.int64 and tuple(t["y"].shape) == (n,), path
            else:
                assert t["y"].dtype == dt and tuple(t["y"].shape) == (n, d_out), path
            ref = build_model(meta["spec"], dt)
            shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
            P = sum(int(np.prod(s)) for s in shapes.values())
            assert {k[6:] for k in t if k.startswith("param/")} == set(shapes), path
            for k, v in t.items():
                assert v.dtype in (dt, torch.int64), (path, k)
                parts = k.split("/")
                if parts[0] in ("x", "y", "loss", "v", "u", "jvp") or len(parts) == 1:
                    continue
                q, nm, fac = parts[0], parts[1], (parts[2] if len(parts) > 2 else None)
                shp = shapes[nm]
                if fac is not None:
                    side = shp[0] if fac == "out" else shp[1]
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
            nfiles += 1
    print(f"verified {nfiles} fixture files", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["grad", "backpack", "curvlinops"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # bitwise reproducible reductions
    if args.only in (None, "grad"):
        make_grad()
    if args.only in (None, "backpack"):
        make_backpack()
    if args.only in (None, "curvlinops"):
        make_curvlinops()
    verify_all()
    total = 0
    for d, _, files in os.walk(FIX):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    print(f"fixtures total size: {total / 1024:.1f} KiB", flush=True)


if __name__ == "__main__":
    main()
