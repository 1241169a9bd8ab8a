"""Influence edges between the channels of two consecutive displayed layers (Bluff: Das et al.,
"Bluff: Interactively Deciphering Adversarial Attacks on Deep Neural Networks", IEEE VIS 2020,
after Summit's I-matrix, Hohman et al., VIS 2019; spec bluff.md §2.4 and §3.4-3.6).

* :func:`pair_influence`: the per-image influence of input channel i on output channel j of one
  convolution, ``max_hw (X_i ⋆ K[j, i])`` (no bias; batch-norm scale folded; real stride and padding).
* :func:`maxmin`: widest-path composition through internal channels, ``C[o, i] = max_k min(A[o, k], B[k, i])``.
* :func:`plan_transition`: what lies between a displayed layer p and the next one l, read from the
  module graph with ``torch.fx``: an expression over convolutions (:class:`ConvStep`), sums (residual
  joins, :class:`Join`, combined by element-wise max as spec §3.6 says) and channel concatenations
  (:class:`Concat`, inception-style blocks); channel-wise modules (ReLU, pooling, BN not after a conv,
  dropout, identity) pass the channels through. Anything else yields None: that transition uses the
  gradient × activation fallback (:func:`gradient_edges`), labelled differently in the UI.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

_CHUNK_ELEMENTS = 1 << 25  # bound on the depthwise conv's output size (floats) per chunk


# ----------------------------------------------------------------------------------------------------
# per-convolution influence and composition
# ----------------------------------------------------------------------------------------------------
def folded_weight(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """The conv kernel with the following batch norm's scale ``gamma / sqrt(var + eps)`` folded in
    (spec §6.7: the BN shift and the bias are ignored, so influences compare across channels)."""
    weight = conv.weight.detach()
    if bn is None:
        return weight
    if bn.running_var is None:
        raise ValueError(f"batch norm after {conv} keeps no running statistics to fold in")
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    return weight * (gamma / torch.sqrt(bn.running_var + bn.eps))[:, None, None, None]


def _one_by_one(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.groups == 1 and conv.padding in ((0, 0), "valid")


def pair_influence(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None,
                   cols: torch.Tensor | None = None) -> torch.Tensor:
    """``out[b, j, k] = max_hw (x[b, cols[k]] ⋆ W[j, cols[k]])`` for the conv's real stride, padding and
    dilation (spec §3.4): ``[B, C_out, len(cols)]``, zero where a grouped conv does not connect i to j.
    ``cols`` selects input channels (all by default): restricting them is exact. A 1×1 conv needs no
    spatial work: the max of ``w · x_i`` is ``w · max x_i`` for w ≥ 0 and ``w · min x_i`` otherwise."""
    weight = folded_weight(conv, bn).to(x.dtype)
    c_out, c_in_g = weight.shape[:2]
    cols = torch.arange(x.shape[1], device=x.device) if cols is None else cols.to(x.device)
    xs = x[:, cols]
    if _one_by_one(conv):
        stride = conv.stride
        sub = xs[..., ::stride[0], ::stride[1]]
        hi, lo = sub.amax((2, 3)), sub.amin((2, 3))
        w = weight[:, cols, 0, 0]
        return torch.where(w >= 0, w * hi[:, None, :], w * lo[:, None, :])
    c_out_g = c_out // conv.groups
    group = cols // c_in_g
    kernels = weight.view(conv.groups, c_out_g, c_in_g, *weight.shape[2:])[group, :, cols % c_in_g]
    rows = group[:, None] * c_out_g + torch.arange(c_out_g, device=x.device)  # [n, C_out_g]
    out = x.new_zeros(x.shape[0], len(cols), c_out)
    spatial = F.conv2d(x[:1, :1], weight[:1, :1], stride=conv.stride, padding=conv.padding,
                       dilation=conv.dilation).shape[2:].numel()
    step = max(1, _CHUNK_ELEMENTS // max(1, x.shape[0] * c_out_g * spatial))
    for start in range(0, len(cols), step):
        part = slice(start, start + step)
        n = len(cols[part])
        y = F.conv2d(xs[:, part], kernels[part].reshape(n * c_out_g, 1, *weight.shape[2:]), stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=n)
        peak = y.amax((2, 3)).view(x.shape[0], n, c_out_g)
        out[:, part].scatter_(2, rows[part].expand(x.shape[0], -1, -1), peak)
    return out.transpose(1, 2)


def maxmin(a: np.ndarray, b: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Widest-path composition (Bluff edges.py; spec §2.4): ``C[o, i] = max_k min(A[o, k], B[k, i])``."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[0], chunk):
        block = a[start:start + chunk]
        out[start:start + chunk] = np.minimum(block[:, :, None], b[None, :, :]).max(axis=1)
    return out


# ----------------------------------------------------------------------------------------------------
# transition plans (what lies between two displayed layers), read with torch.fx
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """The transition's input: the output of the lower displayed layer."""


@dataclass(frozen=True)
class ConvStep:
    """A convolution (full module name) with the batch norm folded into it, applied to ``src``."""

    conv: str
    bn: str | None
    src: "Expr"


@dataclass(frozen=True)
class Join:
    """A sum of branches (a residual add): combined by element-wise max (spec §3.6)."""

    parts: tuple["Expr", ...]


@dataclass(frozen=True)
class Concat:
    """Branches concatenated along channels, in order (inception-style blocks; spec §3.5)."""

    parts: tuple["Expr", ...]


Expr = Union[Source, ConvStep, Join, Concat]


class NotComposable(Exception):
    """The module graph between two displayed layers holds an operation the weight rules do not cover."""


_CHANNELWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.MaxPool2d, nn.AvgPool2d,
                        nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)
_CHANNELWISE_FUNCTIONS = {F.relu, torch.relu, F.max_pool2d, F.avg_pool2d, F.leaky_relu, F.gelu, F.silu,
                          F.dropout}
_CHANNELWISE_METHODS = {"relu", "contiguous"}
_SUMS = {operator.add, torch.add}


def _module_call_expr(module: nn.Module, name: str, src: Expr, sole_user: bool) -> Expr:
    """The expression of calling a leaf ``module`` (full name ``name``) on ``src``. A batch norm whose
    input is a convolution used nowhere else is folded into it."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
        return ConvStep(name, None, src)
    if isinstance(module, nn.BatchNorm2d) and isinstance(src, ConvStep) and src.bn is None and sole_user:
        return ConvStep(src.conv, name, src.src)
    if isinstance(module, _CHANNELWISE_MODULES):
        return src
    raise NotComposable(f"{type(module).__name__} {name}")


def _node_expr(node: fx.Node, root: nn.Module, prefix: str, env: dict[fx.Node, Expr]) -> Expr:
    """The expression of one fx node, from its inputs' expressions."""
    args = [a for a in node.args if isinstance(a, fx.Node)]
    if node.op == "call_module":
        return _module_call_expr(root.get_submodule(str(node.target)), prefix + str(node.target), env[args[0]],
                                 sole_user=len(args[0].users) == 1)
    if node.op == "call_function" and node.target in _SUMS and len(args) == len(node.args) == 2:
        return Join(tuple(env[a] for a in args))
    if node.op == "call_function" and node.target is torch.cat and _channel_dim(node):
        return Concat(tuple(env[a] for a in cast(Sequence[fx.Node], node.args[0])))
    if (node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS) or \
            (node.op == "call_method" and node.target in _CHANNELWISE_METHODS):
        return env[args[0]]
    raise NotComposable(f"{node.op} {node.target}")


def _channel_dim(node: fx.Node) -> bool:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim in (1, -3)


def module_expr(module: nn.Module, name: str, src: Expr) -> Expr:
    """The expression of ``module`` (full name ``name`` in the model) applied to ``src``: a torch.nn
    layer directly, any other module by tracing its forward with fx (NotComposable if it cannot be
    traced or holds an operation the rules do not cover)."""
    tracer = fx.Tracer()
    if tracer.is_leaf_module(module, ""):
        return _module_call_expr(module, name, src, sole_user=True)
    try:
        graph = tracer.trace(module)
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        raise NotComposable(f"{name} cannot be traced: {err}") from None
    prefix = f"{name}." if name else ""
    env: dict[fx.Node, Expr] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            if env:
                raise NotComposable(f"{name} takes more than one input")
            env[node] = src
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise NotComposable(f"{name} returns more than one tensor")
            return env[node.args[0]]
        else:
            env[node] = _node_expr(node, module, prefix, env)
    raise NotComposable(f"{name} has no output")


def chain_between(model: nn.Module, lower: str, upper: str, upper_reads_lower: bool
                  ) -> list[tuple[str, nn.Module]] | None:
    """The modules that map the output of ``lower`` to the output of ``upper``: the siblings after
    ``lower`` up to ``upper`` when both sit in one ``nn.Sequential``; ``upper`` alone when it was seen
    to read ``lower``'s output directly (``upper_reads_lower``); else None."""
    parent_lower, _, last_lower = lower.rpartition(".")
    parent_upper, _, last_upper = upper.rpartition(".")
    parent = model.get_submodule(parent_upper)
    if parent_lower == parent_upper and isinstance(parent, nn.Sequential):
        names = [n for n, _ in parent.named_children()]
        i, j = names.index(last_lower), names.index(last_upper)
        if i < j:
            prefix = f"{parent_upper}." if parent_upper else ""
            return [(prefix + n, parent.get_submodule(n)) for n in names[i + 1:j + 1]]
    if upper_reads_lower:
        return [(upper, model.get_submodule(upper))]
    return None


def plan_transition(model: nn.Module, lower: str, upper: str, upper_reads_lower: bool) -> Expr | None:
    """The weight-rule expression for the edges ``lower → upper``, or None when the gradient
    fallback must be used (the graph between them is not a chain of covered operations)."""
    chain = chain_between(model, lower, upper, upper_reads_lower)
    if chain is None:
        return None
    expr: Expr = Source()
    try:
        for name, module in chain:
            expr = module_expr(module, name, expr)
    except NotComposable:
        return None
    return expr


def convs_of(expr: Expr) -> list[ConvStep]:
    """Every convolution step of an expression, each once, inputs first."""
    found: list[ConvStep] = []

    def walk(e: Expr) -> None:
        if isinstance(e, ConvStep):
            walk(e.src)
            if e not in found:
                found.append(e)
        elif isinstance(e, (Join, Concat)):
            for part in e.parts:
                walk(part)

    walk(expr)
    return found


def evaluate(expr: Expr, med: dict[str, np.ndarray], source_act: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The composed median influence ``[C_upper, len(cols)]`` of the lower layer's channels ``cols`` on
    every upper channel. ``med[conv]`` holds each conv's median pair influence: over ``cols`` for convs
    that read the source (directly or through channel-wise ops), over all input channels otherwise.
    ``source_act`` is the lower layer's median spatial-max activation: an identity skip carries
    channel i to itself with that weight (spec §3.6)."""
    if isinstance(expr, Source):
        ident = np.zeros((len(source_act), len(cols)), dtype=np.float32)
        ident[cols, np.arange(len(cols))] = source_act[cols]
        return ident
    if isinstance(expr, ConvStep):
        if isinstance(expr.src, Source):
            return med[expr.conv]
        return maxmin(med[expr.conv], evaluate(expr.src, med, source_act, cols))
    parts = [evaluate(p, med, source_act, cols) for p in expr.parts]
    return np.maximum.reduce(parts) if isinstance(expr, Join) else np.concatenate(parts, axis=0)


# ----------------------------------------------------------------------------------------------------
# the gradient fallback (spec §3.6, "generic fallback for any module graph")
# ----------------------------------------------------------------------------------------------------
def gradient_edges(lower_out: torch.Tensor, lower_leaf: torch.Tensor, upper_out: torch.Tensor,
                   rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per image ``[B, len(rows), len(cols)]``: ``sum_hw(∂ max_hw a_upper[j] / ∂ a_lower ⊙ a_lower)[i]``,
    gradient × activation from channel i of the lower layer (made a leaf, ``lower_leaf``) to channel
    j of the upper one. Not Bluff's weight-based influence: the UI labels these edges differently."""
    peaks = upper_out.amax((2, 3))[:, rows]
    per_row = []
    for k in range(len(rows)):
        (grad,) = torch.autograd.grad(peaks[:, k].sum(), lower_leaf, retain_graph=True, allow_unused=True)
        grad = torch.zeros_like(lower_leaf) if grad is None else grad
        per_row.append((grad * lower_out)[:, cols].sum((2, 3)))
    return torch.stack(per_row, dim=1)
