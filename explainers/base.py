"""The explainer contract (DESIGN.md, "Contracts"), modelled on Captum's Attribution classes and
scikit-learn's "params in, no work in constructors".

An explainer is a class with

* ``spec``: a :class:`Spec` (id, title, paper, modality, capabilities, version);
* ``Params``: a frozen dataclass subclassing :class:`Params`; every field is declared with
  :func:`param` so pages can render widgets (bounds, choices, help, group) and the CLI/URL can
  parse values from strings;
* ``explain(model, x, target, params, background=None) -> Result``: pure; the model's device and
  dtype follow ``x``; it never moves the model. It fills ``attributions`` and ``extras``; the runner
  adds targets, predictions, metrics and provenance.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import torch

from model_registry.base import ModelHandle


class ParamError(ValueError):
    """A parameter value is unknown, of the wrong type, or out of bounds; the message names it."""


class ExplainError(ValueError):
    """The request cannot run (incompatible model/dataset/explainer, bad target); says why."""


def param(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple | None = None,
    help: str = "",
    group: str = "main",
) -> Any:
    """Declare a Params field with its default, bounds or choices, help text and widget group."""
    meta = {"low": low, "high": high, "choices": choices, "help": help, "group": group}
    return field(default=default, metadata=meta)


PRESETS = ("loupe", "paper")
"""Parameter presets of the seed explainers (issue #17): ``paper`` is the paper's settings (the
defaults Loupe had before presets existed), ``loupe`` the defaults Loupe's quality benches chose
(README, "SAMP and OSA-DAS"). A field a preset governs is declared with :func:`preset_param`."""


def preset_param(help: str = "", group: str = "main", **bounds: Any) -> Any:
    """A field whose default comes from the chosen ``preset`` (the class's ``presets`` table); a
    value the user sets wins over the preset's. ``bounds``: low, high, choices as for :func:`param`."""
    return param(None, help=help, group=group, **bounds)


def preset_choice() -> Any:
    """The ``preset`` field itself."""
    return param("loupe", choices=PRESETS,
                 help="loupe: the defaults Loupe's benches chose; paper: the paper's settings. "
                      "A parameter you set wins over the preset")


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, kind: type, value: Any) -> Any:
    """Convert ``value`` (possibly a string from a URL or the CLI) to ``kind`` or raise ParamError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_TRUE | _BOOL_FALSE:
            return value.lower() in _BOOL_TRUE
        raise ParamError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ParamError(f"{name} must be an integer, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise ParamError(f"{name} must be an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ParamError(f"{name} must be a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ParamError(f"{name} must be a number, got {value!r}") from None
        if not np.isfinite(out):
            raise ParamError(f"{name} must be finite, got {value!r}")
        return out
    if kind is str:
        if not isinstance(value, str):
            raise ParamError(f"{name} must be a string, got {value!r}")
        return value
    raise ParamError(f"{name}: unsupported parameter type {kind}")


@dataclass(frozen=True)
class Params:
    """Base class of every explainer's parameters: validated on construction, JSON round-trip.

    Explainers with presets declare a ``preset`` field (:func:`preset_choice`), the fields it
    governs with :func:`preset_param` (default None: "the preset's value") and ``presets``, the
    values per preset. Construction fills every field still None from the chosen preset, so a
    constructed Params never holds None and ``to_dict`` gives the values used."""

    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Preset name -> value of every :func:`preset_param` field under that preset."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        if self.presets:
            preset = getattr(self, "preset")
            if preset not in self.presets:
                raise ParamError(f"preset must be one of {list(self.presets)}, got {preset!r}")
            for name, value in self.presets[preset].items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, value)
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None:
                raise ParamError(f"{f.name} has no value: preset {getattr(self, 'preset', None)!r} does not set it")
            value = _coerce(f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            meta = f.metadata
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise ParamError(f"{f.name} must be one of {list(meta['choices'])}, got {value!r}")
            if meta.get("low") is not None and value < meta["low"]:
                raise ParamError(f"{f.name} must be ≥ {meta['low']}, got {value!r}")
            if meta.get("high") is not None and value > meta["high"]:
                raise ParamError(f"{f.name} must be ≤ {meta['high']}, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "Params":
        """Build from a dict (JSON, URL or CLI strings allowed); unknown names raise ParamError."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ParamError(f"unknown parameter(s) {unknown}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, suitable for canonical JSON."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the params part of a run key."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def schema(cls) -> list[dict[str, Any]]:
        """One dict per field (name, type, default, low, high, choices, help, group) for widgets.
        A preset field's ``default`` is its value under the default preset, and ``presets`` maps
        every preset to its value there."""
        hints = typing.get_type_hints(cls)
        defaults = cls()
        out = []
        for f in dataclasses.fields(cls):
            row = {"name": f.name, "type": hints[f.name].__name__, "default": getattr(defaults, f.name),
                   **f.metadata}
            if f.default is None and cls.presets:
                row["presets"] = {name: values[f.name] for name, values in cls.presets.items()}
            out.append(row)
        return out


@dataclass(frozen=True)
class Spec:
    """What an explainer is and what it needs."""

    id: str
    title: str
    paper: str
    modalities: tuple[str, ...]
    needs_gradients: bool
    needs_layer: bool = False
    class_agnostic: bool = False
    stochastic: bool = False
    output: str = "attribution"
    version: str = "1"
    description: str = ""


def _unset() -> np.ndarray:
    return np.empty(0)


@dataclass
class Result:
    """One explanation batch. Explainers fill ``attributions`` (raw, signed: B×H×W images, B×F
    tables) and ``extras``; the runner fills the rest (the per-sample arrays stay empty until then)."""

    attributions: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)
    sample_ids: list[int] = field(default_factory=list)
    targets: np.ndarray = field(default_factory=_unset)
    predictions: np.ndarray = field(default_factory=_unset)
    confidences: np.ndarray = field(default_factory=_unset)
    labels: np.ndarray = field(default_factory=_unset)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    """The stored run's key (set once the result is in the store)."""
    link: str | None = None
    """The run's permanent share link."""
    cached: bool = False
    """True when every sample came from the store and no model pass ran."""


@dataclass(frozen=True)
class Passes:
    """Model passes of an explanation: rows through the model's forward pass and rows that are also
    backpropagated, each as a (low, high) range (equal when the count is exact; a range where it
    depends on the data, e.g. SAMP's path lengths). A row is what ``worker.jobs.PassCounter`` counts."""

    forward: tuple[int, int]
    backward: tuple[int, int] = (0, 0)

    @classmethod
    def exact(cls, forward: int, backward: int = 0) -> "Passes":
        return cls((forward, forward), (backward, backward))

    def __add__(self, other: "Passes") -> "Passes":
        return Passes((self.forward[0] + other.forward[0], self.forward[1] + other.forward[1]),
                      (self.backward[0] + other.backward[0], self.backward[1] + other.backward[1]))

    def times(self, n: int) -> "Passes":
        """The passes of ``n`` samples."""
        return Passes((self.forward[0] * n, self.forward[1] * n), (self.backward[0] * n, self.backward[1] * n))


def _unsupported(spec: Spec, model: ModelHandle) -> str | None:
    """Why a method with ``spec`` cannot run on ``model`` (None when it can)."""
    if model.task not in spec.modalities:
        return f"{spec.id} works on {'/'.join(spec.modalities)} models, not {model.task}"
    if spec.needs_gradients and not model.differentiable:
        return f"{spec.id} needs gradients; {model.id} is a black box"
    if spec.needs_layer and not (model.hookable and model.gradcam_layer):
        return f"{spec.id} needs a hookable convolution layer; {model.id} exposes none"
    return None


AnyParams = Params
"""The base class under a second name, for annotations inside classes whose ``Params`` attribute
hides it."""
P = TypeVar("P", bound=Params)
"""An explainer's or analysis's own ``Params`` class."""


class Explainer(ABC, Generic[P]):
    """Base class: subclasses set ``spec`` and ``Params`` and implement :meth:`explain`; they are
    generic in their ``Params`` class (``class Saliency(Explainer[SaliencyParams])``), so the type
    checker knows the params each method receives."""

    spec: ClassVar[Spec]
    Params: ClassVar[type[AnyParams]]

    def unsupported_reason(self, model: ModelHandle) -> str | None:
        """Why this explainer cannot run on ``model`` (None when it can)."""
        return _unsupported(self.spec, model)

    def resolve(self, model: ModelHandle, params: P) -> P:
        """``params`` with every "auto" value (e.g. a 0 meaning "by image size") replaced by the
        value used on ``model``, so that stored params, cache keys and forms show what ran. This
        default has nothing to resolve; explainers with auto values override it."""
        return params

    def passes(self, model: ModelHandle, params: P) -> Passes:
        """Model passes one sample costs with ``params`` on ``model`` (the cost preview multiplies
        them by the model's measured pass time). This default, one forward and one backward pass,
        fits single-gradient methods; explainers that do more override it."""
        return Passes.exact(1, int(self.spec.needs_gradients))

    @abstractmethod
    def explain(
        self,
        model: ModelHandle,
        x: torch.Tensor,
        target: torch.Tensor,
        params: P,
        background: torch.Tensor | None = None,
    ) -> Result:
        """Explain ``x`` (on the model's device) for class indices ``target`` (B,)."""


@dataclass(frozen=True)
class Prepared:
    """What an analysis reads, gathered by the submitting process: the dataset positions it covers
    (for display and links) and the plain arrays/values its worker-side :meth:`Analysis.compute`
    needs. The store keys the artifact by a digest of ``inputs``, so two requests that read the same
    data share one result."""

    sample_ids: list[int]
    inputs: dict[str, Any]


class Analysis(ABC, Generic[P]):
    """A method whose result is one artifact over a dataset slice rather than one map per sample:
    rule sets, pathway graphs, embeddings (DESIGN.md, "Result kinds").

    Same conventions as :class:`Explainer` (``spec`` with ``spec.output`` naming the artifact kind,
    frozen ``Params``, no work in the constructor). The work is split where the data flow splits:
    :meth:`prepare` runs in the submitting process and only gathers arrays (no model passes);
    :meth:`compute` runs on a worker, on the model's device, and returns JSON-able ``info`` plus
    named arrays, which the store keeps as one artifact (``worker.analyses.run_analysis``)."""

    spec: ClassVar[Spec]
    Params: ClassVar[type[AnyParams]]

    def unsupported_reason(self, model: ModelHandle) -> str | None:
        """Why this analysis cannot run on ``model`` (None when it can)."""
        return _unsupported(self.spec, model)

    def resolve(self, model: ModelHandle, params: P) -> P:
        """As :meth:`Explainer.resolve`: auto values replaced by the values used on ``model``."""
        return params

    @abstractmethod
    def prepare(self, model: ModelHandle, dataset: Any, params: P) -> Prepared:
        """The samples and arrays this analysis reads from ``dataset`` (a ``data.base.Dataset``)."""

    @abstractmethod
    def compute(self, model: ModelHandle, params: P, inputs: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Run on the worker: ``(info, arrays)``; ``info`` must survive a JSON round trip."""


class ArtifactView:
    """Base of the typed views of a stored analysis result (``RulesResult``, ``PathwaysResult``):
    the wrapped ``store.artifacts.Artifact`` and its identity. Subclasses set ``KIND`` (their
    analysis's ``spec.output``) and read everything else from ``artifact.arrays``/``info``, so a
    share link reopens exactly the stored result and nothing is recomputed."""

    KIND: ClassVar[str]

    def __init__(self, artifact: Any) -> None:
        if artifact.kind != self.KIND:
            raise ExplainError(f"stored result {artifact.key} is a {artifact.kind!r} result, not {self.KIND}")
        self.artifact = artifact

    @classmethod
    def from_artifact(cls, artifact: Any) -> Self:
        """Wrap a stored artifact; one of another kind is a user error (ExplainError)."""
        return cls(artifact)

    @property
    def key(self) -> str:
        return self.artifact.key

    @property
    def link(self) -> str | None:
        return self.artifact.link

    @property
    def cached(self) -> bool:
        return self.artifact.cached

    @property
    def info(self) -> dict[str, Any]:
        return self.artifact.info
