"""The explainer registry: every module in this package that defines ``EXPLAINERS`` contributes.

Pages, the CLI and workers look explainers up here and never branch on their names, so adding an
explainer touches only its module and its tests. Modules are imported on the first lookup, not at
import time of the app.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

import explainers
from explainers.base import Explainer

_NOT_METHODS = {"base", "registry", "evaluation", "runner"}


class UnknownExplainer(KeyError):
    """No explainer has this id."""

    def __str__(self) -> str:
        return str(self.args[0])


@lru_cache(maxsize=1)
def all_explainers() -> dict[str, Explainer]:
    """Every registered explainer, keyed by id, in module order."""
    found: dict[str, Explainer] = {}
    for info in sorted(pkgutil.iter_modules(explainers.__path__), key=lambda m: m.name):
        if info.name in _NOT_METHODS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"explainers.{info.name}")
        for cls in getattr(module, "EXPLAINERS", ()):
            if cls.spec.id in found:
                raise RuntimeError(f"explainer id {cls.spec.id!r} registered twice")
            found[cls.spec.id] = cls()
    return found


def get_explainer(explainer_id: str) -> Explainer:
    """The explainer with this id; an unknown id raises UnknownExplainer listing the known ones."""
    table = all_explainers()
    if explainer_id not in table:
        raise UnknownExplainer(f"unknown explainer {explainer_id!r}; known: {sorted(table)}")
    return table[explainer_id]
