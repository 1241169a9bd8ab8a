"""Bluff activation pathways for any hookable CNN (Das, Park, Wang, Hohman, Firstman, Rogers, Chau,
"Bluff: Interactively Deciphering Adversarial Attacks on Deep Neural Networks", IEEE VIS 2020;
spec bluff.md).

For a class pair (original → target) and an attack, the analysis

1. attacks the original class's benign images toward the target at every strength of a grid, as one
   batch (ART's PGD with per-sample radii, or FGSM; [0, 1] pixel space), and keeps the successes;
2. records each displayed layer's per-channel spatial max and takes the median over images for the
   benign original set, the benign target set and the attacked set at each strength (spec §2.3);
3. picks the displayed nodes in four columns, original-only / both / target-only / attack-only
   (spec §2.6, §3.7), and computes the influence edges between them (``explainers._influence``);
4. records the top-activating dataset patches of every displayed channel (receptive-field crops).

Everything is stored along one condition axis ``[original, target, s_1 … s_E]``, so the page's
strength slider, criterion and top-k% are array slicing on the stored result's view,
:class:`explainers.results.pathways.PathwaysResult`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, cast

import numpy as np
import torch
from torch import nn

from explainers import _influence as inf
from explainers._common import hooked
from explainers.base import Analysis, ParamError, Params, Prepared, Spec, param, preset_choice
from explainers.batching import rows_per_pass
from explainers.results.pathways import COLUMNS
from model_registry.base import ModelHandle

ATTACK_COLUMN_CAP = 15  # spec §6.16: the attack-only column is capped by first appearance


# ----------------------------------------------------------------------------------------------------
# attacks (ART; notes/stack.md §7)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSpec:
    """A targeted attack from the Adversarial Robustness Toolbox with a per-sample strength."""

    title: str
    norm: float
    iterative: bool
    default_grid: tuple[float, ...]
    unit: str

    def build(self, classifier: Any, eps: np.ndarray, steps: int, batch_size: int) -> Any:
        """The ART attack for per-sample radii ``eps`` (shape N×1×1×1). PGD takes 50 steps of eps/5 by
        default (Bluff's settings, spec §2.2) and no random start (ART refuses one with array radii)."""
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch

        if self.iterative:
            return ProjectedGradientDescentPyTorch(classifier, norm=self.norm, eps=eps, eps_step=eps / 5, max_iter=steps,
                                                   targeted=True, num_random_init=0, batch_size=batch_size,
                                                   verbose=False)
        return FastGradientMethod(classifier, norm=self.norm, eps=eps, targeted=True, batch_size=batch_size)


ATTACKS: dict[str, AttackSpec] = {
    "pgd_l2": AttackSpec("PGD (L2)", 2.0, True, tuple(round(0.05 * k, 2) for k in range(1, 11)), "L2 radius"),
    "pgd_linf": AttackSpec("PGD (L∞)", math.inf, True, tuple(round(k / 255, 5) for k in range(1, 11)),
                           "L∞ radius"),
    "fgsm": AttackSpec("FGSM (L∞)", math.inf, False, tuple(round(2 * k / 255, 5) for k in range(1, 11)),
                       "L∞ step"),
}


def _parse_grid(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ParamError(f"strengths must be comma-separated numbers, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise ParamError(f"strengths must be positive numbers, got {text!r}")
    if list(values) != sorted(set(values)):
        raise ParamError(f"strengths must be increasing and distinct, got {text!r}")
    return values


@dataclass(frozen=True)
class PathwaysParams(Params):
    """What to attack and how; every field is part of the stored result's key. Both presets are
    Bluff's settings as the spec reconstructs them (specs/bluff.md), which no Loupe bench has found a
    reason to change (README, "Presets")."""

    presets: ClassVar[dict] = {"loupe": {}, "paper": {}}
    preset: str = preset_choice()
    original: int = param(0, low=0, help="class index of the attacked (benign) images")
    target: int = param(1, low=0, help="class index the targeted attack pushes them to")
    attack: str = param("pgd_l2", choices=tuple(ATTACKS), help="ART attack, targeted, in [0, 1] pixel space")
    strengths: str = param("", help="comma-separated attack strengths (radii in [0, 1] pixel units); "
                                    "empty: the attack's default grid of 10")
    steps: int = param(50, low=1, high=1000, help="PGD iterations (step = strength/5)", group="attack")
    images: int = param(32, low=1, high=5000, help="benign images per class")
    correct_only: bool = param(True, help="use only benign images the model classifies correctly (spec §6.3)")
    top_k: int = param(10, low=1, high=100, help="nodes per layer taken from each class's top list", group="graph")
    attack_k: int = param(5, low=1, high=50, help="new attack-only nodes per strength", group="graph")
    patches: int = param(8, low=0, high=32, help="top dataset patches kept per displayed channel", group="detail")
    patch_pool: int = param(256, low=0, high=100000, help="evaluation images searched for patches", group="detail")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.original == self.target:
            raise ParamError(f"original and target must differ, both are class {self.original}")
        text = self.strengths.strip() or ",".join(map(str, ATTACKS[self.attack].default_grid))
        object.__setattr__(self, "strengths", ",".join(format(v, "g") for v in _parse_grid(text)))

    @property
    def grid(self) -> tuple[float, ...]:
        """The strength grid as numbers."""
        return _parse_grid(self.strengths)


# ----------------------------------------------------------------------------------------------------
# forward passes with hooks (always removed)
# ----------------------------------------------------------------------------------------------------
def _batches(x: np.ndarray, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, len(x), size):
        yield torch.from_numpy(np.ascontiguousarray(x[start:start + size])).to(device)


@torch.no_grad()
def channel_peaks(module: nn.Module, layers: list[str], x: np.ndarray, batch_size: int, device: torch.device
                  ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Logits ``[N, K]`` and each layer's per-channel spatial max ``[N, C_l]`` (spec §2.3 step 1);
    also the last batch's layer outputs (for shape and wiring checks)."""
    peaks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    last: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            if not torch.is_tensor(out) or out.dim() != 4:
                raise ParamError(f"layer {name!r} must output [batch, channels, height, width], "
                                 f"got {type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
            last[name] = out
            peaks[name].append(out.amax((2, 3)).float().cpu().numpy())
        return hook

    logits = []
    with hooked(module, {name: keep(name) for name in layers}):
        for xb in _batches(x, batch_size, device):
            logits.append(module(xb).float().cpu().numpy())
    n_classes = logits[0].shape[1] if logits else 0
    return (np.concatenate(logits) if logits else np.zeros((0, n_classes), np.float32),
            {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in peaks.items()}, last)


@torch.no_grad()
def reads_directly(module: nn.Module, layers: list[str], x: torch.Tensor) -> list[bool]:
    """For each consecutive pair of displayed layers, whether the upper one's first input is exactly
    the lower one's output tensor (then the upper module alone maps one to the other)."""
    outs: dict[str, torch.Tensor] = {}
    seen: dict[str, bool] = {}

    def keep(name: str) -> Callable:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            outs[name] = out
        return hook

    def check(lower: str, upper: str) -> Callable:
        def hook(_m: nn.Module, args: tuple) -> None:
            seen[upper] = bool(args) and args[0] is outs.get(lower)
        return hook

    pre = {u: check(lo, u) for lo, u in zip(layers, layers[1:])}
    with hooked(module, {name: keep(name) for name in layers}, pre):
        module(x)
    return [seen.get(u, False) for u in layers[1:]]


def median_rows(values: np.ndarray, width: int) -> np.ndarray:
    """Median over images (numpy semantics: the mean of the two middle values for even n; spec §6.4);
    NaN when the set is empty (no successful attack at that strength)."""
    if len(values) == 0:
        return np.full(width, np.nan, dtype=np.float32)
    return np.median(values, axis=0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# node columns (spec §2.6, §3.7)
# ----------------------------------------------------------------------------------------------------
def top_list(med: np.ndarray, k: int) -> list[int]:
    """The k channels of largest median activation, descending (ties by index); none when NaN."""
    if np.isnan(med).all():
        return []
    order = np.lexsort((np.arange(len(med)), -np.nan_to_num(med, nan=-np.inf)))
    return [int(c) for c in order[:k]]


def columns(med: np.ndarray, top_k: int, attack_k: int) -> dict[str, list[int]]:
    """Bluff's columns for one layer from its condition × channel medians: original-only, both,
    target-only and attack-only (the union over strengths of each strength's first ``attack_k`` new
    channels among its top ``top_k``, capped by first appearance)."""
    o, t = top_list(med[0], top_k), top_list(med[1], top_k)
    both = [c for c in o if c in t]
    attack: list[int] = []
    for row in med[2:]:
        new = [c for c in top_list(row, top_k) if c not in o and c not in t][:attack_k]
        attack += [c for c in new if c not in attack]
    return {"original": [c for c in o if c not in both], "both": both, "target": [c for c in t if c not in both],
            "attack": attack[:ATTACK_COLUMN_CAP]}


# ----------------------------------------------------------------------------------------------------
# edges
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transition:
    """Edges from displayed layer ``lower`` to ``upper``: a weight-rule expression, or None for the
    gradient fallback; ``rows``/``cols`` are the displayed channels of upper/lower."""

    lower: str
    upper: str
    expr: inf.Expr | None
    rows: np.ndarray
    cols: np.ndarray

    @property
    def kind(self) -> str:
        """"weights" (Bluff's rule) or "gradient" (the fallback; labelled differently in the UI)."""
        return "weights" if self.expr is not None else "gradient"


def _conv_hooks(module: nn.Module, transitions: list[Transition], store: dict[str, list[torch.Tensor]]
                ) -> dict[str, Callable]:
    """Forward-pre hooks that turn each conv's real input into its per-image pair influence."""
    hooks: dict[str, Callable] = {}
    for t in transitions:
        for step in inf.convs_of(t.expr) if t.expr is not None else []:
            conv = cast(nn.Conv2d, module.get_submodule(step.conv))
            bn = cast(nn.BatchNorm2d, module.get_submodule(step.bn)) if step.bn else None
            cols = torch.from_numpy(t.cols) if isinstance(step.src, inf.Source) else None

            def hook(_m: nn.Module, args: tuple, conv: nn.Conv2d = conv, bn: nn.BatchNorm2d | None = bn,
                     cols: torch.Tensor | None = cols, name: str = step.conv) -> None:
                with torch.no_grad():
                    store.setdefault(name, []).append(inf.pair_influence(args[0], conv, bn, cols).cpu())
            hooks[step.conv] = hook
    return hooks


def edge_medians(module: nn.Module, transitions: list[Transition], x: np.ndarray, lower_act: list[np.ndarray],
                 batch_size: int, device: torch.device) -> list[np.ndarray]:
    """Median influence ``[len(rows), len(cols)]`` of each transition over the images ``x`` (one
    condition): medians of each conv first, then composition (Bluff's order, spec §6.9). ``lower_act``
    is each transition's lower-layer median activation on the same images. NaN when ``x`` is empty."""
    if len(x) == 0:
        return [np.full((len(t.rows), len(t.cols)), np.nan, np.float32) for t in transitions]
    per_conv: dict[str, list[torch.Tensor]] = {}
    fallback = [t for t in transitions if t.expr is None]
    grads: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(fallback))}
    outs: dict[str, torch.Tensor] = {}
    leaves: dict[str, torch.Tensor] = {}

    def keep(name: str, make_leaf: bool) -> Callable:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor | None:
            outs[name] = out
            if make_leaf:
                leaves[name] = out.detach().requires_grad_()
                return leaves[name]
            return None
        return hook

    lowers = {t.lower for t in fallback}
    forward = {name: keep(name, name in lowers) for name in lowers | {t.upper for t in fallback}}
    with hooked(module, forward, _conv_hooks(module, transitions, per_conv)), torch.set_grad_enabled(bool(fallback)):
        for xb in _batches(x, batch_size, device):
            module(xb)
            for i, t in enumerate(fallback):
                grads[i].append(inf.gradient_edges(outs[t.lower].detach(), leaves[t.lower], outs[t.upper],
                                                   torch.from_numpy(t.rows), torch.from_numpy(t.cols)).detach().cpu())
            outs.clear()
            leaves.clear()
    med = {name: np.median(torch.cat(parts).numpy(), axis=0) for name, parts in per_conv.items()}
    result, k = [], 0
    for t, act in zip(transitions, lower_act):
        if t.expr is None:
            result.append(np.median(torch.cat(grads[k]).numpy(), axis=0).astype(np.float32))
            k += 1
        else:
            result.append(inf.evaluate(t.expr, med, act, t.cols)[t.rows].astype(np.float32))
    return result


# ----------------------------------------------------------------------------------------------------
# dataset patches (receptive-field crops)
# ----------------------------------------------------------------------------------------------------
def receptive_field(module: nn.Module, layer: str, input_shape: tuple[int, ...], device: torch.device
                    ) -> tuple[int, int]:
    """Height and width of the input region that moves the layer's centre position: the bounding box
    of the input gradient (one backward pass on a seeded random image)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, *input_shape, generator=gen).to(device).requires_grad_()
    seen: dict[str, torch.Tensor] = {}
    with hooked(module, {layer: lambda _m, _i, out: seen.__setitem__("out", out)}), torch.enable_grad():
        module(x)
        out = seen["out"]
        out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    assert x.grad is not None  # the layer's centre output depends on the input
    moved = (x.grad[0].abs().sum(0) > 0).cpu().numpy()
    if not moved.any():
        return input_shape[1], input_shape[2]
    rows, cols = np.flatnonzero(moved.any(1)), np.flatnonzero(moved.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@torch.no_grad()
def top_patches(module: nn.Module, layers: list[str], nodes: list[tuple[int, int]], x: np.ndarray, n_top: int,
                batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """For each displayed node (layer index, channel): the ``n_top`` pool images where it fires most
    (positions into ``x``, -1 when fewer) and the receptive-field box ``[y0, x0, y1, x1]`` around its
    arg-max in each."""
    n = len(nodes)
    ids = np.full((n, n_top), -1, np.int64)
    boxes = np.zeros((n, n_top, 4), np.int32)
    if n_top == 0 or len(x) == 0 or n == 0:
        return ids, boxes
    height, width = x.shape[2], x.shape[3]
    by_layer = {li: [(k, c) for k, (lj, c) in enumerate(nodes) if lj == li] for li in range(len(layers))}
    peak = np.zeros((n, len(x)), np.float32)
    where = np.zeros((n, len(x), 2), np.float32)
    seen: dict[str, torch.Tensor] = {}
    with hooked(module, {name: (lambda _m, _i, out, name=name: seen.__setitem__(name, out)) for name in layers}):
        for start, xb in zip(range(0, len(x), batch_size), _batches(x, batch_size, device)):
            module(xb)
            for li, members in by_layer.items():
                if not members:
                    continue
                out = seen[layers[li]][:, [c for _, c in members]]
                flat = out.flatten(2)
                value, arg = flat.max(2)
                rows = ((arg // out.shape[3]).float() + 0.5) * height / out.shape[2]
                cols = ((arg % out.shape[3]).float() + 0.5) * width / out.shape[3]
                idx = [k for k, _ in members]
                peak[idx, start:start + len(xb)] = value.T.cpu().numpy()
                where[idx, start:start + len(xb)] = torch.stack([rows, cols], -1).transpose(0, 1).cpu().numpy()
    sizes = [receptive_field(module, layer, tuple(x.shape[1:]), device) for layer in layers]
    for k, (li, _) in enumerate(nodes):
        best = np.argsort(-peak[k], kind="stable")[:n_top]
        rf_h, rf_w = sizes[li]
        ids[k, :len(best)] = best
        for p, i in enumerate(best):
            cy, cx = where[k, i]
            y0 = int(np.clip(round(cy - rf_h / 2), 0, max(0, height - rf_h)))
            x0 = int(np.clip(round(cx - rf_w / 2), 0, max(0, width - rf_w)))
            boxes[k, p] = (y0, x0, min(height, y0 + rf_h), min(width, x0 + rf_w))
    return ids, boxes


# ----------------------------------------------------------------------------------------------------
# the analysis
# ----------------------------------------------------------------------------------------------------
BATCH_SIZE = 256
"""Images per pass (attack, statistics, edges) off the CPU; on the CPU :func:`rows_per_pass` sizes
passes by the model's widest layer output (16 rows for shapes_cnn)."""


def attack_grid(model: ModelHandle, x: np.ndarray, target: int, params: PathwaysParams, batch_size: int
                ) -> np.ndarray:
    """All images at all strengths as one batch ``[E·N, …]`` (strength-major), attacked toward ``target``."""
    from art.estimators.classification import PyTorchClassifier

    grid = np.asarray(params.grid, dtype=np.float32)
    xs = np.tile(x, (len(grid), 1, 1, 1))
    eps = np.repeat(grid, len(x))[:, None, None, None]
    device = model.device
    classifier = PyTorchClassifier(model=model.module, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                   nb_classes=len(model.classes), clip_values=(0.0, 1.0), preprocessing=None,
                                   device_type="gpu" if device.type == "cuda" else "cpu")  # the model normalises itself
    onehot = np.zeros((len(xs), len(model.classes)), np.float32)
    onehot[:, target] = 1.0
    with torch.cuda.device(device) if device.type == "cuda" else _nothing(), weights_frozen(model.module):
        attack = ATTACKS[params.attack].build(classifier, eps, params.steps, batch_size)
        return attack.generate(xs, y=onehot).astype(np.float32)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def weights_frozen(module: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients for the block (restored after): ART calls
    ``loss.backward()``, which would otherwise also compute, and store in ``.grad``, every weight
    gradient; the attack needs only the input's (measured on 2 CPU cores: the attack took 1.3× longer without this)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _benign(model: ModelHandle, layers: list[str], x: np.ndarray, label: int, n: int, correct_only: bool,
            batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Positions of the first ``n`` gathered images to use (correctly classified when asked) and their
    channel peaks, from one pass over the gathered images."""
    logits, peaks, _ = channel_peaks(model.module, layers, x, batch_size, model.device)
    keep = np.flatnonzero(logits.argmax(1) == label)[:n] if correct_only else np.arange(min(n, len(x)))
    return keep, {name: p[keep] for name, p in peaks.items()}


class BluffPathways(Analysis[PathwaysParams]):
    """Bluff activation pathways of a targeted attack; see the module docstring."""

    spec = Spec(
        id="bluff_pathways",
        title="Bluff activation pathways",
        paper="Das, Park et al., Bluff: Interactively Deciphering Adversarial Attacks on Deep Neural Networks, VIS 2020",
        modalities=("image",),
        needs_gradients=True,
        output="pathways",
        description="channels and connections that carry benign vs attacked evidence across layers",
    )
    Params = PathwaysParams

    def unsupported_reason(self, model: ModelHandle) -> str | None:
        """Also needs hookable named layers (a TorchScript model has none)."""
        reason = super().unsupported_reason(model)
        if reason is None and not (model.hookable and len(model.layers) >= 2):
            return (f"bluff_pathways needs at least 2 hookable layers; {model.id} exposes "
                    f"{model.layers if model.hookable else 'none (TorchScript)'}: list them as layers = [...] "
                    "in its manifest entry (a state_dict or exported model)")
        return reason

    def prepare(self, model: ModelHandle, dataset: Any, params: PathwaysParams) -> Prepared:
        """The eval images of both classes (twice as many as asked, so that the correctness filter on
        the worker can still find enough) and the patch pool."""
        n_classes = len(model.classes)
        for name in ("original", "target"):
            if getattr(params, name) >= n_classes:
                raise ParamError(f"{name} must be a class index below {n_classes}, got {getattr(params, name)}")
        class_map = dataset.class_map_for(model.classes)
        class_map.require(model.id, dataset.id, "Bluff's per-class image selection")
        labels = class_map.labels(dataset.eval.y)  # the model's class indices, without decoding a sample
        gathered = {}
        for name in ("original", "target"):
            ids = np.flatnonzero(labels == getattr(params, name))[:2 * params.images].tolist()
            if not ids:
                raise ParamError(f"dataset {dataset.id!r} has no images of class {model.classes[getattr(params, name)]!r}")
            gathered[name] = ids
        pool = list(range(min(params.patch_pool, len(dataset))))
        ids = sorted(set(gathered["original"]) | set(gathered["target"]) | set(pool))
        return Prepared(ids, {
            "original_ids": np.asarray(gathered["original"]), "x_original": dataset.samples(gathered["original"]),
            "target_ids": np.asarray(gathered["target"]), "x_target": dataset.samples(gathered["target"]),
            "pool_ids": np.asarray(pool, dtype=np.int64), "x_pool": dataset.samples(pool),
        })

    def compute(self, model: ModelHandle, params: PathwaysParams, inputs: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Attack, node statistics, columns, edges and patches; see the module docstring."""
        module, device, layers = model.module, model.device, list(model.layers)
        size = rows_per_pass(module, torch.from_numpy(inputs["x_original"][:1]).to(device), BATCH_SIZE)
        keep_o, peaks_o = _benign(model, layers, inputs["x_original"], params.original, params.images,
                                  params.correct_only, size)
        keep_t, peaks_t = _benign(model, layers, inputs["x_target"], params.target, params.images,
                                  params.correct_only, size)
        if len(keep_o) == 0 or len(keep_t) == 0:
            raise ParamError("no correctly classified benign images of the original or target class; "
                             "set correct_only=false or pick other classes")
        xo, xt = inputs["x_original"][keep_o], inputs["x_target"][keep_t]
        grid = params.grid
        x_adv = attack_grid(model, xo, params.target, params, size)
        sets, peaks = [xo, xt], [peaks_o, peaks_t]
        logits, adv_peaks, _ = channel_peaks(module, layers, x_adv, size, device)
        success = (logits.argmax(1) == params.target).reshape(len(grid), len(xo))
        for e in range(len(grid)):
            rows = slice(e * len(xo), (e + 1) * len(xo))
            sets.append(x_adv[rows][success[e]])
            peaks.append({name: adv_peaks[name][rows][success[e]] for name in layers})
        widths = [adv_peaks[name].shape[1] for name in layers]
        med = [np.stack([median_rows(p[name], w) for p in peaks]) for name, w in zip(layers, widths)]
        cols = [columns(m, params.top_k, params.attack_k) for m in med]
        node_layer, node_channel, node_column = [], [], []
        for li, layer_cols in enumerate(cols):
            for ci, name in enumerate(COLUMNS):
                node_layer += [li] * len(layer_cols[name])
                node_channel += layer_cols[name]
                node_column += [ci] * len(layer_cols[name])
        node_layer_a, node_channel_a = np.asarray(node_layer, np.int64), np.asarray(node_channel, np.int64)
        index = {(li, c): k for k, (li, c) in enumerate(zip(node_layer, node_channel))}
        shown = [node_channel_a[node_layer_a == li] for li in range(len(layers))]
        reads = reads_directly(module, layers, torch.from_numpy(xo[:1]).to(device))
        transitions = [Transition(lo, up, inf.plan_transition(module, lo, up, r), shown[i + 1], shown[i])
                       for i, (lo, up, r) in enumerate(zip(layers, layers[1:], reads))]
        per_cond = [edge_medians(module, transitions, x, [m[c] for m in med[:-1]], size, device)
                    for c, x in enumerate(sets)]
        edge_src, edge_dst, edge_tr = [], [], []
        for i, t in enumerate(transitions):
            for r in t.rows:
                for c in t.cols:
                    edge_src.append(index[(i, int(c))])
                    edge_dst.append(index[(i + 1, int(r))])
                    edge_tr.append(i)
        edge_inf = np.stack([np.concatenate([m.ravel() for m in cond]) if transitions else np.zeros(0, np.float32)
                             for cond in per_cond]).astype(np.float32)
        nodes = list(zip(node_layer, node_channel))
        patch_pos, boxes = top_patches(module, layers, nodes, inputs["x_pool"], params.patches, size, device)
        patch_ids = np.where(patch_pos >= 0, inputs["pool_ids"][np.maximum(patch_pos, 0)], -1)
        info = {"layers": layers, "channels": widths, "classes": list(model.classes), "original": params.original,
                "target": params.target, "attack": params.attack, "attack_title": ATTACKS[params.attack].title,
                "unit": ATTACKS[params.attack].unit, "edge_kinds": [t.kind for t in transitions]}
        arrays = {"strengths": np.asarray(grid, np.float64), "success_rate": success.mean(1).astype(np.float32),
                  "n_used": np.asarray([len(s) for s in sets], np.int64),
                  "original_ids": inputs["original_ids"][keep_o], "target_ids": inputs["target_ids"][keep_t],
                  "node_layer": node_layer_a, "node_channel": node_channel_a,
                  "node_column": np.asarray(node_column, np.int64),
                  "edge_src": np.asarray(edge_src, np.int64), "edge_dst": np.asarray(edge_dst, np.int64),
                  "edge_transition": np.asarray(edge_tr, np.int64), "edge_inf": edge_inf,
                  "patch_ids": patch_ids, "patch_boxes": boxes,
                  **{f"median_{li}": m for li, m in enumerate(med)}}
        return info, arrays


ANALYSES = [BluffPathways]
