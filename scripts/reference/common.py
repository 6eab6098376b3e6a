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
    """Split a flat spec into ``(layer name, [args])`` tokens (commas inside parens kept).

    Only for specs without residual blocks; :func:`parse_spec` handles every spec."""
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


# ------------------------------------------------------------ the spec grammar
#
#   spec     := layers
#   layers   := layer (',' layer)*
#   layer    := 'residual' '(' layers ['|' layers] ')'
#             | NAME ['(' [argument (',' argument)*] ')']
#   argument := [KEY '='] value          value := NUMBER | true | false
#
# As in INTERFACES.md and crates/nn/src/spec/parser.rs: names and keys match without
# regard to case; positional arguments fill a layer's slots in PyTorch's order, keyword
# arguments (after all positional ones) fill them by name.

# layer -> [(slot name, aliases)], in positional order
_SLOTS: Dict[str, List[Tuple[str, Tuple[str, ...]]]] = {
    "linear": [("in_features", ("in",)), ("out_features", ("out",)), ("bias", ())],
    "conv2d": [("in_channels", ("in",)), ("out_channels", ("out",)),
               ("k", ("kernel_size", "kernel")), ("s", ("stride",)), ("p", ("padding",)),
               ("d", ("dilation",)), ("groups", ()), ("bias", ())],
    "maxpool2d": [("k", ("kernel_size", "kernel")), ("s", ("stride",)), ("p", ("padding",))],
    "avgpool2d": [("k", ("kernel_size", "kernel")), ("s", ("stride",)), ("p", ("padding",))],
    "adaptiveavgpool2d": [("output_size", ())],
    "flatten": [], "relu": [], "sigmoid": [], "tanh": [],
    "leakyrelu": [("slope", ("negative_slope",))],
    "elu": [("alpha", ())],
    "selu": [], "softplus": [], "gelu": [], "identity": [],
    "dropout": [("p", ())],
    "batchnorm1d": [("n", ("num_features", "features"))],
    "batchnorm2d": [("n", ("num_features", "features"))],
    "layernorm": [("n", ("normalized_shape", "features"))],
}


class _Lexer:
    _TOK = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"
                      r"|([(),|=]))")

    def __init__(self, text: str):
        self.toks, pos = [], 0
        text = text.rstrip()
        while pos < len(text):
            m = self._TOK.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"spec {text!r}: unexpected character at {pos}")
            kind = "ident" if m.group(1) else "number" if m.group(2) else m.group(3)
            self.toks.append((kind, m.group(m.lastindex), m.start(m.lastindex)))
            pos = m.end()
        self.toks.append(("end", "", len(text)))
        self.i, self.text = 0, text

    def peek(self):
        return self.toks[self.i]

    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, kind, what):
        t = self.next()
        if t[0] != kind:
            raise ValueError(f"spec {self.text!r}: expected {what} at {t[2]}, found {t[1]!r}")
        return t


def parse_spec(spec: str) -> List[tuple]:
    """Parse a spec into layers: ``(name, {slot: text})`` or
    ``("residual", body_layers, shortcut_layers_or_None)``."""
    lx = _Lexer(spec)
    layers, end = _parse_layers(lx, ("end",))
    return layers


def _parse_layers(lx, enders):
    layers = []
    while True:
        t = lx.expect("ident", "a layer name")
        layers.append(_parse_layer(lx, t))
        sep = lx.next()
        if sep[0] in enders:
            return layers, sep[0]
        if sep[0] != ",":
            raise ValueError(f"spec {lx.text!r}: expected ',' or {enders} at {sep[2]}")


def _parse_layer(lx, tok):
    name = tok[1].lower()
    if name == "residual":
        lx.expect("(", "'(' after residual")
        body, end = _parse_layers(lx, ("|", ")"))
        shortcut = None
        if end == "|":
            shortcut, _ = _parse_layers(lx, (")",))
        return ("residual", body, shortcut)
    if name not in _SLOTS:
        raise ValueError(f"spec {lx.text!r}: unknown layer {tok[1]!r} at {tok[2]}")
    slots = _SLOTS[name]
    vals: Dict[str, str] = {}
    if lx.peek()[0] == "(":
        lx.next()
        npos, seen_kw = 0, False
        if lx.peek()[0] == ")":
            lx.next()
        else:
            while True:
                t = lx.next()
                if t[0] not in ("ident", "number"):
                    raise ValueError(f"spec {lx.text!r}: expected an argument at {t[2]}")
                if t[0] == "ident" and lx.peek()[0] == "=":
                    lx.next()
                    v = lx.next()
                    key = t[1].lower()
                    hits = [s for s, al in slots if key == s or key in al]
                    if not hits:
                        raise ValueError(f"spec {lx.text!r}: unknown argument {t[1]!r} "
                                         f"for {name}")
                    if hits[0] in vals:
                        raise ValueError(f"spec {lx.text!r}: {hits[0]} given twice")
                    vals[hits[0]] = v[1]
                    seen_kw = True
                else:
                    if seen_kw or npos >= len(slots):
                        raise ValueError(f"spec {lx.text!r}: bad positional argument at {t[2]}")
                    vals[slots[npos][0]] = t[1]
                    npos += 1
                sep = lx.next()
                if sep[0] == ")":
                    break
                if sep[0] != ",":
                    raise ValueError(f"spec {lx.text!r}: expected ',' or ')' at {sep[2]}")
    return (name, vals)


def _flag(v: str) -> bool:
    if v.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, found {v!r}")
    return v.lower() == "true"


def _build_layer(layer, dtype):
    from residual import Residual

    name = layer[0]
    if name == "residual":
        _, body, shortcut = layer
        return Residual([_build_layer(b, dtype) for b in body],
                        [_build_layer(s, dtype) for s in shortcut] if shortcut else None)
    a = layer[1]
    if name == "linear":
        return nn.Linear(int(a["in_features"]), int(a["out_features"]),
                         bias=_flag(a.get("bias", "true")), dtype=dtype)
    if name == "conv2d":
        return nn.Conv2d(int(a["in_channels"]), int(a["out_channels"]), int(a["k"]),
                         stride=int(a.get("s", 1)), padding=int(a.get("p", 0)),
                         dilation=int(a.get("d", 1)), groups=int(a.get("groups", 1)),
                         bias=_flag(a.get("bias", "true")), dtype=dtype)
    if name == "maxpool2d":
        k = int(a["k"])
        return nn.MaxPool2d(k, stride=int(a.get("s", k)), padding=int(a.get("p", 0)))
    if name == "avgpool2d":  # PyTorch defaults: count_include_pad=True, ceil_mode=False
        k = int(a["k"])
        return nn.AvgPool2d(k, stride=int(a.get("s", k)), padding=int(a.get("p", 0)))
    if name == "adaptiveavgpool2d":
        return nn.AdaptiveAvgPool2d(int(a["output_size"]))
    if name == "flatten":
        return nn.Flatten()
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name == "leakyrelu":
        return nn.LeakyReLU(float(a.get("slope", 0.01)))
    if name == "elu":
        return nn.ELU(float(a.get("alpha", 1.0)))
    if name == "selu":
        return nn.SELU()
    if name == "softplus":
        return nn.Softplus()
    if name == "gelu":
        return nn.GELU()  # exact erf GELU
    if name == "identity":
        return nn.Identity()
    if name == "dropout":
        return nn.Dropout(float(a.get("p", 0.5)))
    if name == "batchnorm1d":  # eps=1e-5, momentum=0.1, affine, running statistics
        return nn.BatchNorm1d(int(a["n"]), dtype=dtype)
    if name == "batchnorm2d":
        return nn.BatchNorm2d(int(a["n"]), dtype=dtype)
    if name == "layernorm":  # over the last axis, eps=1e-5, elementwise affine
        return nn.LayerNorm(int(a["n"]), dtype=dtype)
    raise ValueError(f"unknown layer {name!r}")


def build_model(spec: str, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Build the ``nn.Sequential`` for a spec (PyTorch default init, current RNG).

    Residual blocks become :class:`residual.Residual` modules, so their state_dict names
    are ``<i>.body.<j>.weight`` and ``<i>.shortcut.<j>.running_mean``."""
    return nn.Sequential(*[_build_layer(layer, dtype) for layer in parse_spec(spec)])


def io_dims(spec: str) -> Tuple[int, int]:
    """Input and output feature dimension of an MLP spec (first and last linear)."""
    lins = [args for name, args in split_spec(spec) if name == "linear"]
    return int(lins[0][0]), int(lins[-1][1])


def out_dim(spec: str) -> int:
    """Output dimension of a spec whose last parametrized layer is a linear one."""
    def last_linear(layers):
        for layer in reversed(layers):
            if layer[0] == "linear":
                return int(layer[1]["out_features"])
        raise ValueError(f"spec {spec!r} does not end in a linear layer")
    return last_linear(parse_spec(spec))


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
