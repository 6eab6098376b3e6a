"""Reference fixtures for secondo's online marginal-likelihood training, from
laplace-torch 0.3's ``marglik_training`` (BackPACK backend, BackPACK's
conventions as in make_laplace_fixtures.py).

Writes ``tests/fixtures/marglik/<case>.safetensors``: the initial parameters
(``param/<name>``), the training data ``x``, ``y``, and per phase ``k`` (one
after every epoch):

* ``phase<k>/log_prior``, ``phase<k>/log_sigma`` (regression): the log
  hyperparameters after the phase's Adam steps, read from the hyper
  optimizer after each step;
* ``phase<k>/log_marglik``: the evidence of the phase's Laplace
  approximation there (secondo's convention: its last iterate);
* ``phase<k>/param/<name>``: the weights the phase was fitted at;

and ``best/param/<name>``, the weights ``marglik_training`` returns (those of
its best phase), ``best_phase`` (its index).

laplace-torch compares its phases by the evidence before the last Adam step,
secondo at the last iterate; the script checks that both pick the same phase,
so that the fixture tests keep-best without that difference.

No regression under ``kron``: laplace-torch 0.3's ``KronDecomposed.__mul__``
turns the factor ``1/(σ²T)`` into a number (torch warns "Converting a tensor
with requires_grad=True to a scalar"), so its σ ascent there misses the
log-determinant's share of the gradient; secondo takes the derivative
(checked by finite differences in tests/laplace.rs).

Conventions matched: full-batch training (the shuffle of secondo's batches
then only reorders a sum), one output for regression (laplace-torch divides
the prior of the weight steps by ``N``, secondo by ``N·C``), no burn-in.

Run: ``.venv/bin/python scripts/reference/make_marglik_fixtures.py``.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys

import torch
from laplace.curvature import BackPackGGN
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(__file__))
from common import build_model, name_seed  # noqa: E402
from make_fixtures import pkg_version, write  # noqa: E402

# The module (the package exports its function under the same name).
mt = importlib.import_module("laplace.marglik_training")

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "marglik")

# name, spec, inputs, likelihood, structure, prior structure, temperature, epochs, lr
CASES = [
    ("classification_full_diagonal", "linear(3,5),tanh,linear(5,3)", 3, "classification",
     "full", "diag", 2.0, 6, 0.05),
    ("regression_full_layerwise", "linear(1,8),tanh,linear(8,1)", 1, "regression",
     "full", "layerwise", 0.5, 8, 0.3),
    ("classification_kron_layerwise", "linear(3,5),tanh,linear(5,3)", 3, "classification",
     "kron", "layerwise", 1.0, 4, 0.05),
]
N, STEPS, LR_HYP = 32, 5, 0.1


def data(inputs, likelihood, gen):
    x = torch.randn((N, inputs), dtype=torch.float64, generator=gen)
    if likelihood == "classification":
        y = ((x[:, 0] + 0.5 * x[:, 1] > 0).long() + torch.randint(0, 2, (N,), generator=gen))
    else:
        y = torch.sin(2 * x) + 0.1 * torch.randn((N, 1), dtype=torch.float64, generator=gen)
    return x, y


def case(name, spec, inputs, likelihood, structure, prior_structure, temperature, epochs, lr):
    seed = name_seed(name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec, torch.float64)
    x, y = data(inputs, likelihood, gen)
    out = {f"param/{k}": v.clone() for k, v in model.state_dict().items()}
    out.update({"x": x, "y": y.double() if likelihood == "regression" else y})

    # Record every phase's Laplace approximation (with the weights it was
    # fitted at) and the hyperparameters after every Adam step on them.
    laps, states, hyper = [], [], []
    real_laplace, real_adam = mt.Laplace, mt.Adam

    def recording_laplace(model, *args, **kwargs):
        lap = real_laplace(model, *args, **kwargs)
        laps.append(lap)
        states.append(copy.deepcopy(model.state_dict()))
        return lap

    class RecordingAdam(real_adam):
        def step(self, *args, **kwargs):
            result = super().step(*args, **kwargs)
            hyper.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
            return result

    # marglik_training's default `optimizer_cls=Adam` was bound at its
    # definition, so only the hyper optimizer is the recording one.
    mt.Laplace, mt.Adam = recording_laplace, RecordingAdam
    try:
        loader = DataLoader(TensorDataset(x, y), batch_size=N)
        lap, best_model, margliks, _ = mt.marglik_training(
            model, loader, likelihood=likelihood, hessian_structure=structure,
            backend=BackPackGGN, optimizer_kwargs={"lr": lr}, n_epochs=epochs,
            lr_hyp=LR_HYP, prior_structure=prior_structure, n_hypersteps=STEPS,
            temperature=temperature)
    finally:
        mt.Laplace, mt.Adam = real_laplace, real_adam
    phases = laps[:-1]  # the last is the refit at the best phase
    assert len(phases) == epochs and len(hyper) == epochs * STEPS
    evidence = []
    for k, phase in enumerate(phases):
        last = hyper[(k + 1) * STEPS - 1]
        sigma = last[1].exp() if likelihood == "regression" else None
        e = phase.log_marginal_likelihood(last[0].exp(), sigma).detach()
        evidence.append(e.item())
        out[f"phase{k}/log_prior"] = last[0]
        if likelihood == "regression":
            out[f"phase{k}/log_sigma"] = last[1]
        out[f"phase{k}/log_marglik"] = e.reshape(1)
        out.update({f"phase{k}/param/{n}": v for n, v in states[k].items()})
    # laplace-torch's choice: the least negative evidence before each phase's last step.
    theirs = min(range(epochs), key=lambda k: margliks[(k + 1) * STEPS - 1])
    ours = max(range(epochs), key=lambda k: evidence[k])
    assert theirs == ours, (theirs, ours, evidence)
    for n, v in best_model.state_dict().items():
        assert torch.equal(v, states[ours][n]), n
        out[f"best/param/{n}"] = v.clone()
    out["best_phase"] = torch.tensor([float(ours)], dtype=torch.float64)
    meta = {
        "spec": spec, "loss": "cross_entropy" if likelihood == "classification" else "mse",
        "reduction": "mean", "dtype": "float64", "input_shape": str(inputs),
        "likelihood": likelihood, "structure": structure, "prior_structure": prior_structure,
        "temperature": temperature, "epochs": epochs, "lr": lr, "lr_hyp": LR_HYP,
        "n_hypersteps": STEPS, "seed": seed, "backend": "BackPackGGN",
        "laplace_torch_version": pkg_version("laplace-torch"),
        "torch_version": torch.__version__,
        "backpack_version": pkg_version("backpack-for-pytorch"),
    }
    write(os.path.join(OUT, f"{name}.safetensors"), {k: v.detach() for k, v in out.items()}, meta)
    print(f"{name}: evidence per phase {[round(e, 4) for e in evidence]}, best phase {ours}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for c in CASES:
        case(*c)
