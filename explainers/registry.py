"""The explainer registry: every module in this package that defines ``EXPLAINERS`` (per-sample
attribution methods) or ``ANALYSES`` (methods whose result is one artifact: rules, pathways,
embeddings) contributes.

Pages, the CLI and workers look explainers up here and never branch on their names, so adding an
explainer touches only its module and its tests. Modules are imported on the first lookup, not at
import time of the app.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any

import explainers
from explainers.base import Analysis, Explainer

_NOT_METHODS = {"base", "registry", "evaluation", "runner", "results"}


class UnknownExplainer(KeyError):
    """No explainer has this id."""

    def __str__(self) -> str:
        return str(self.args[0])


@lru_cache(maxsize=1)
def _discover() -> tuple[dict[str, Explainer], dict[str, Analysis]]:
    """Both tables, in module order; one id space, so a link or CLI id is never ambiguous."""
    found: tuple[dict[str, Explainer], dict[str, Analysis]] = ({}, {})
    for info in sorted(pkgutil.iter_modules(explainers.__path__), key=lambda m: m.name):
        if info.name in _NOT_METHODS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"explainers.{info.name}")
        tables: tuple[tuple[dict[str, Any], str], ...] = ((found[0], "EXPLAINERS"), (found[1], "ANALYSES"))
        for table, attr in tables:
            for cls in getattr(module, attr, ()):
                if cls.spec.id in found[0] or cls.spec.id in found[1]:
                    raise RuntimeError(f"explainer id {cls.spec.id!r} registered twice")
                table[cls.spec.id] = cls()
    return found


def all_explainers() -> dict[str, Explainer]:
    """Every registered per-sample explainer, keyed by id, in module order."""
    return _discover()[0]


def all_analyses() -> dict[str, Analysis]:
    """Every registered analysis (rules, pathways, embeddings …), keyed by id, in module order."""
    return _discover()[1]


def get_explainer(explainer_id: str) -> Explainer:
    """The explainer with this id; an unknown id raises UnknownExplainer listing the known ones."""
    table = all_explainers()
    if explainer_id not in table:
        hint = " (an analysis: run it with loupe.analysis)" if explainer_id in all_analyses() else ""
        raise UnknownExplainer(f"unknown explainer {explainer_id!r}{hint}; known: {sorted(table)}")
    return table[explainer_id]


def get_analysis(analysis_id: str) -> Analysis:
    """The analysis with this id; an unknown id raises UnknownExplainer listing the known ones."""
    table = all_analyses()
    if analysis_id not in table:
        raise UnknownExplainer(f"unknown analysis {analysis_id!r}; known: {sorted(table)}")
    return table[analysis_id]
