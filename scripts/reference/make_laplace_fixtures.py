"""Reference fixtures for secondo's Laplace approximations, from laplace-torch.

Writes ``tests/fixtures/laplace/<case>.safetensors``: the model's parameters
(``param/<name>``), training and test data, and laplace-torch 0.3's results
with the BackPACK backend (BackPACK's conventions, which secondo follows: the
bias its own Kronecker block, KFLR for the exact GGN's factors):

* ``log_marglik``: the log marginal likelihood at ``prior_precision`` (and
  ``sigma_noise`` for regression);
* ``optimized_prior``: ``optimize_prior_precision(method='marglik')`` (Adam,
  lr 0.1, ``n_steps`` steps) from 1, and ``optimized_log_marglik`` there;
* classification: ``probit`` and ``bridge``, the GLM predictive's
  probabilities on the test inputs at ``prior_precision``;
  regression: ``f_mu`` and ``f_var``, the GLM predictive's mean and
  functional (epistemic) variance, without σ² (secondo's variance adds it).

The ``*_tempered`` cases fit at a likelihood temperature ``T ≠ 1``
(``Laplace(..., temperature=T)``: posterior precision ``H/(σ²T) + δ``, the
data term of the evidence over ``T``, the Gaussian normalizer not).

Run with a venv holding laplace-torch 0.3 next to the reference environment
(README.md): ``.venv/bin/python scripts/reference/make_laplace_fixtures.py
[CASE ...]`` (every case without names).
"""

from __future__ import annotations

import os
import sys

import torch
from laplace import Laplace
from laplace.curvature import BackPackGGN
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(__file__))
from common import build_model, name_seed  # noqa: E402
from make_fixtures import pkg_version, write  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "laplace")

# name, spec, input shape, likelihood, structure, subset, prior shape[, temperature]
CASES = [
    ("mlp_full", "linear(4,6),tanh,linear(6,3)", (4,), "classification", "full", "all", "layerwise"),
    ("mlp_kron", "linear(4,6),tanh,linear(6,3)", (4,), "classification", "kron", "all", "layerwise"),
    ("mlp_diag", "linear(4,6),tanh,linear(6,3)", (4,), "classification", "diag", "all", "diag"),
    ("mlp_regression_full", "linear(1,8),tanh,linear(8,1)", (1,), "regression", "full", "all", "scalar"),
    ("mlp_regression_kron", "linear(1,8),tanh,linear(8,1)", (1,), "regression", "kron", "all", "layerwise"),
    ("mlp_regression_diag", "linear(1,8),tanh,linear(8,1)", (1,), "regression", "diag", "all", "scalar"),
    ("cnn_last_layer", "conv2d(1,2,3),relu,flatten,linear(32,3)", (1, 6, 6), "classification", "full", "last_layer", "scalar"),
    ("mlp_kron_tempered", "linear(4,6),tanh,linear(6,3)", (4,), "classification", "kron", "all", "layerwise", 0.5),
    ("mlp_regression_full_tempered", "linear(1,8),tanh,linear(8,1)", (1,), "regression", "full", "all", "scalar", 2.0),
]
N_TRAIN, N_TEST, PRIOR, SIGMA, STEPS = 40, 10, 0.5, 0.8, 100


def data(spec_in, likelihood, n, gen):
    x = torch.randn((n, *spec_in), dtype=torch.float64, generator=gen)
    if likelihood == "classification":
        y = torch.randint(0, 3, (n,), generator=gen)
    else:
        y = torch.sin(2 * x.reshape(n, 1)) + 0.1 * torch.randn((n, 1), dtype=torch.float64, generator=gen)
    return x, y


def fitted(model, likelihood, structure, subset, loader, prior, temperature):
    la = Laplace(model, likelihood, subset_of_weights=subset, hessian_structure=structure,
                 backend=BackPackGGN, prior_precision=prior,
                 sigma_noise=SIGMA if likelihood == "regression" else 1.0,
                 temperature=temperature)
    la.fit(loader)
    return la


def case(name, spec, shape, likelihood, structure, subset, prior_shape, temperature=1.0):
    seed = name_seed(name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec, torch.float64)
    x, y = data(shape, likelihood, N_TRAIN, gen)
    xt, yt = data(shape, likelihood, N_TEST, gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    la = fitted(model, likelihood, structure, subset, loader, PRIOR, temperature)
    out = {f"param/{k}": v for k, v in model.state_dict().items()}
    out.update({"x": x, "y": y, "test_x": xt, "test_y": yt})
    out["log_marglik"] = la.log_marginal_likelihood().detach().reshape(1)
    if likelihood == "classification":
        out["probit"] = la(xt, pred_type="glm", link_approx="probit")
        out["bridge"] = la(xt, pred_type="glm", link_approx="bridge")
    else:
        f_mu, f_var = la(xt, pred_type="glm")
        out["f_mu"], out["f_var"] = f_mu, f_var.reshape(N_TEST, 1)
    tuned = fitted(model, likelihood, structure, subset, loader, 1.0, temperature)
    tuned.optimize_prior_precision(method="marglik", n_steps=STEPS, lr=0.1,
                                   prior_structure=prior_shape)
    out["optimized_prior"] = tuned.prior_precision.detach().reshape(-1)
    out["optimized_log_marglik"] = tuned.log_marginal_likelihood().detach().reshape(1)
    meta = {
        "spec": spec, "loss": "cross_entropy" if likelihood == "classification" else "mse",
        "reduction": "mean", "dtype": "float64", "input_shape": ",".join(map(str, shape)), "likelihood": likelihood,
        "structure": structure, "subset": subset, "prior_shape": prior_shape,
        "prior_precision": PRIOR, "sigma": SIGMA if likelihood == "regression" else 1.0,
        "temperature": temperature,
        "n_steps": STEPS, "batch_size": 16, "seed": seed, "backend": "BackPackGGN",
        "laplace_torch_version": pkg_version("laplace-torch"),
        "torch_version": torch.__version__,
        "backpack_version": pkg_version("backpack-for-pytorch"),
    }
    write(os.path.join(OUT, f"{name}.safetensors"), {k: v.detach() for k, v in out.items()}, meta)
    print(f"{name}: log marglik {out['log_marglik'].item():.6f}, "
          f"optimized prior {out['optimized_prior'].tolist()}")


if __name__ == "__main__":
    wanted = sys.argv[1:]
    unknown = set(wanted) - {c[0] for c in CASES}
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)}; the cases: {[c[0] for c in CASES]}")
    for c in CASES:
        if not wanted or c[0] in wanted:
            case(*c)
