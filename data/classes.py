"""How a dataset's labels map to a model's class indices (DESIGN.md, "Contracts: Dataset"), and the
ImageNet-1k class list that ships with Loupe.

A dataset's labels index its own classes (a folder's sorted class folders, a table's label values);
a model's outputs index its classes. Targets, accuracy, correct-only selections and exports compare
the two, so labels are translated into the model's indices first, by the first rule that applies:

1. ``explicit``: the dataset's manifest entry gives ``class_map`` (dataset class -> model class name
   or index); classes it leaves out are matched by name;
2. ``same classes`` / ``by name``: every dataset class names a model class. Names compare without
   case, and ``_`` equals a space; against the ImageNet-1k classes a WordNet id (``n01440764``) or
   any WordNet lemma that names one class only (``white shark``) matches too;
3. ``by position``: the class counts are equal and no dataset class names a different model class;
4. ``none``: labels become -1 and ``target="label"`` is refused with a message naming both lists.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import DatasetError

IMAGENET_FILE = Path(__file__).with_name("imagenet_classes.tsv")
UNMAPPED = -1
"""The label of a sample whose class is not one of the model's."""


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class: WordNet id, display name and WordNet lemmas (synonyms)."""

    wnid: str
    name: str
    lemmas: tuple[str, ...]


@functools.cache
def imagenet() -> tuple[ImageNetClass, ...]:
    """The 1000 ImageNet-1k classes in the standard index order (``imagenet_classes.tsv``)."""
    rows = [line.split("\t") for line in IMAGENET_FILE.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    return tuple(ImageNetClass(wnid, name, tuple(lemmas.split(", "))) for wnid, name, lemmas in rows)


def imagenet_names() -> tuple[str, ...]:
    """The display names of the 1000 ImageNet-1k classes, in index order."""
    return tuple(c.name for c in imagenet())


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").casefold().split())


@functools.cache
def _names(model_classes: tuple[str, ...]) -> dict[str, set[int]]:
    """Normalised name -> model indices it names: the model's own names, plus WordNet ids and
    lemmas when the model's classes are ImageNet-1k's (by name or by WordNet id)."""
    found: dict[str, set[int]] = {}
    for i, name in enumerate(model_classes):
        found.setdefault(_norm(name), set()).add(i)
    table = imagenet()
    if model_classes in (tuple(c.name for c in table), tuple(c.wnid for c in table)):
        for i, cls in enumerate(table):
            for alias in (cls.wnid, cls.name, *cls.lemmas):
                found.setdefault(_norm(alias), set()).add(i)
    return found


@functools.cache
def _name_index(model_classes: tuple[str, ...]) -> dict[str, int]:
    """Normalised name -> model index, for the names that point at exactly one class."""
    return {name: next(iter(found)) for name, found in _names(model_classes).items() if len(found) == 1}


def _unmatched(model_classes: tuple[str, ...], name: str) -> str:
    """Why ``name`` matches no single model class (it names none, or several)."""
    several = sorted(_names(model_classes).get(_norm(name), ()))
    if len(several) > 1:
        return f"{name!r} names several model classes ({[model_classes[i] for i in several]})"
    return f"{name!r} is not a model class"


def _preview(names: Sequence[str], limit: int = 12) -> str:
    """``names`` for a message: all of them when few, else the first ones and the count."""
    shown = list(names[:limit])
    more = f" … and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)}: {shown}{more}"


@dataclass(frozen=True)
class ClassMap:
    """Model index per dataset class (``UNMAPPED`` where there is none), the rule that produced it
    (``how``) and, when labels cannot be mapped, why (``problem``)."""

    index: tuple[int, ...]
    how: str
    problem: str = ""

    @property
    def mapped(self) -> bool:
        return not self.problem

    @property
    def identity(self) -> bool:
        """Labels keep their values (dataset index i is model index i)."""
        return self.mapped and self.index == tuple(range(len(self.index)))

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` (dataset indices) as model indices; ``UNMAPPED`` where there is no mapping (and
        where a label already is ``UNMAPPED``)."""
        labels = np.asarray(labels, dtype=np.int64)
        index = np.append(np.asarray(self.index, dtype=np.int64), UNMAPPED)  # position -1: UNMAPPED
        return index[np.where(labels < 0, -1, labels)]

    def require(self, model_id: str, dataset_id: str, why: str = "target='label'") -> None:
        """Raise DatasetError naming both class lists when labels cannot be mapped."""
        if self.problem:
            raise DatasetError(f"{why} needs dataset {dataset_id!r}'s labels as model {model_id!r}'s classes, "
                               f"but {self.problem}")


def _explicit(model_classes: tuple[str, ...], dataset_classes: tuple[str, ...], class_map: Mapping[str, str | int],
              names: dict[str, int]) -> tuple[list[int], list[str]]:
    """Model index per dataset class from ``class_map`` (else by name) and the problems found."""
    problems = [f"class_map names {key!r}, which is not a dataset class" for key in class_map
                if key not in dataset_classes]
    index = []
    for cls in dataset_classes:
        value = class_map.get(cls, cls)
        if isinstance(value, int):
            ok = 0 <= value < len(model_classes)
            index.append(value if ok else UNMAPPED)
            if not ok:
                problems.append(f"class_map sends {cls!r} to index {value}, outside 0..{len(model_classes) - 1}")
        else:
            index.append(names.get(_norm(value), UNMAPPED))
            if index[-1] == UNMAPPED:
                why = _unmatched(model_classes, value)
                problems.append(f"class_map sends {cls!r} to {value!r}, but {why}" if cls in class_map
                                else f"{cls!r} is not in class_map, and {why}")
    return index, problems


@functools.cache
def _map(model_classes: tuple[str, ...], dataset_classes: tuple[str, ...],
         class_map: tuple[tuple[str, str | int], ...]) -> ClassMap:
    names = _name_index(model_classes)
    both = f"dataset classes ({_preview(dataset_classes)}); model classes ({_preview(model_classes)})"
    if class_map:
        index, problems = _explicit(model_classes, dataset_classes, dict(class_map), names)
        if problems:
            return ClassMap((UNMAPPED,) * len(dataset_classes), "none", "; ".join(problems) + f". {both}")
        return ClassMap(tuple(index), "explicit")
    if dataset_classes == model_classes:
        return ClassMap(tuple(range(len(model_classes))), "same classes")
    index = [names.get(_norm(c), UNMAPPED) for c in dataset_classes]
    if UNMAPPED not in index:
        return ClassMap(tuple(index), "by name")
    moved = [c for i, c in enumerate(dataset_classes) if index[i] not in (UNMAPPED, i)]
    if len(dataset_classes) == len(model_classes) and not moved:
        return ClassMap(tuple(range(len(model_classes))), "by position")
    missing = [_unmatched(model_classes, c) for c, i in zip(dataset_classes, index) if i == UNMAPPED]
    reason = "; ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
    if len(dataset_classes) != len(model_classes):
        reason += (f"; positions cannot be used either: {len(dataset_classes)} dataset classes against "
                   f"{len(model_classes)} model classes")
    else:
        reason += f"; positions cannot be used either: {moved[:5]} name model classes at other positions"
    return ClassMap((UNMAPPED,) * len(dataset_classes), "none",
                    f"{reason}. {both}. Rename the classes or give class_map = {{ <dataset class> = "
                    "<model class name or index> } in the dataset's manifest entry")


def map_classes(model_classes: Sequence[str], dataset_classes: Sequence[str],
                class_map: Mapping[str, str | int] | None = None) -> ClassMap:
    """How labels of a dataset with ``dataset_classes`` map to a model with ``model_classes``
    (see the module docstring for the rules); cached, so calling it per request is free."""
    return _map(tuple(model_classes), tuple(dataset_classes), tuple(sorted((class_map or {}).items())))
