"""Shared helpers for secondo's Python reference scripts.

Model spec strings describe an ``nn.Sequential``, e.g.
``linear(20,16),tanh,linear(16,16),relu,linear(16,5)``.
"""

from __future__ import annotations

import re
import zlib
from typing import Dict, List, Tuple

import torch
from torch import nn

_TOKEN = re.compile(r"\s*([a-z_]+)\s*(?:\(([^)]*)\))?\s*")


def split_spec(spec: str) -> List[Tuple[str, List[str]]]:
    """Split a spec into ``(layer name, [args])`` tokens (commas inside parens kept)."""
    tokens, depth, cur = [], 0, ""
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            tokens.append(cur)
            cur = ""
        else:
            cur += ch
    tokens.append(cur)
    out = []
    for tok in tokens:
        m = _TOKEN.fullmatch(tok)
        if m is None:
            raise ValueError(f"bad layer token {tok!r} in spec {spec!r}")
        name, args = m.group(1), m.group(2)
        args = [a.strip() for a in args.split(",")] if args else []
        out.append((name, args))
    return out


def build_model(spec: str, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Build the ``nn.Sequential`` for a spec (PyTorch default init, current RNG)."""
    layers = []
    for name, args in split_spec(spec):
        if name == "linear":
            pos = [a for a in args if "=" not in a]
            kw = dict(a.split("=") for a in args if "=" in a)
            bias = kw.get("bias", "true").lower() not in ("false", "0")
            layers.append(nn.Linear(int(pos[0]), int(pos[1]), bias=bias, dtype=dtype))
        elif name == "relu":
            layers.append(nn.ReLU())
        elif name == "sigmoid":
            layers.append(nn.Sigmoid())
        elif name == "tanh":
            layers.append(nn.Tanh())
        elif name == "leakyrelu":
            layers.append(nn.LeakyReLU(float(args[0]) if args else 0.01))
        elif name == "elu":
            layers.append(nn.ELU(float(args[0]) if args else 1.0))
        elif name == "selu":
            layers.append(nn.SELU())
        elif name == "softplus":
            layers.append(nn.Softplus())
        elif name == "gelu":
            layers.append(nn.GELU())  # exact erf GELU
        elif name == "identity":
            layers.append(nn.Identity())
        else:
            raise ValueError(f"unknown layer {name!r}")
    return nn.Sequential(*layers)


def io_dims(spec: str) -> Tuple[int, int]:
    """Input and output feature dimension of a spec."""
    lins = [args for name, args in split_spec(spec) if name == "linear"]
    return int(lins[0][0]), int(lins[-1][1])


def make_loss(loss: str, reduction: str = "mean") -> nn.Module:
    if loss == "cross_entropy":
        return nn.CrossEntropyLoss(reduction=reduction)
    if loss == "mse":
        return nn.MSELoss(reduction=reduction)
    if loss == "bce_with_logits":
        return nn.BCEWithLogitsLoss(reduction=reduction)
    raise ValueError(f"unknown loss {loss!r}")


def make_targets(loss: str, n: int, out: int, dtype: torch.dtype) -> torch.Tensor:
    """Targets drawn from the current torch RNG."""
    if loss == "cross_entropy":
        return torch.randint(0, out, (n,), dtype=torch.int64)
    if loss == "mse":
        return torch.randn(n, out, dtype=dtype)
    if loss == "bce_with_logits":
        return torch.randint(0, 2, (n, out)).to(dtype)
    raise ValueError(f"unknown loss {loss!r}")


def name_seed(name: str) -> int:
    """Stable per-fixture seed derived from its name."""
    return zlib.crc32(name.encode()) % (2**31)


def make_case(spec: str, loss: str, n: int, dtype: torch.dtype, seed: int):
    """Seed torch, build the model (default init), then draw x ~ N(0,1) and y."""
    torch.manual_seed(seed)
    model = build_model(spec, dtype)
    d_in, d_out = io_dims(spec)
    x = torch.randn(n, d_in, dtype=dtype)
    y = make_targets(loss, n, d_out, dtype)
    return model, x, y


def loss_scale(loss: str, reduction: str, n: int, out: int) -> float:
    """s such that L = s * sum_n l_n, with l_n the per-sample loss summed over outputs."""
    if reduction == "sum":
        return 1.0
    if loss == "cross_entropy":
        return 1.0 / n
    return 1.0 / (n * out)  # mse / bce_with_logits mean over all N*C elements


DTYPE_NAME = {torch.float32: "float32", torch.float64: "float64"}


def param_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {f"param/{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
