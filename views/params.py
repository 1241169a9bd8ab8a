"""Explainer parameters for pages and URLs: which widget each ``Params.schema()`` field gets, the
fields grouped as the explainer declares them, and the compact ``<explainer>.<param>=value`` form
the URL carries (only values that differ from the defaults, so links stay short)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

@dataclass(frozen=True)
class Widget:
    """One parameter's widget: ``kind`` is select, toggle, int, float or text; ``options`` for selects."""

    name: str
    kind: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    options: tuple | None = None


def widget(field: Mapping[str, Any]) -> Widget:
    """The widget for one schema field: a select for choices, a toggle for booleans, a number input
    of the field's type bounded by its low/high, a text input for free strings."""
    kind = "select" if field.get("choices") else {"bool": "toggle", "int": "int", "float": "float",
                                                  "str": "text"}.get(field["type"])
    if kind is None:
        raise ValueError(f"parameter {field['name']!r} has type {field['type']!r}, which no widget renders")
    return Widget(field["name"], kind, field["default"], field.get("help", ""), field.get("low"), field.get("high"),
                  tuple(field["choices"]) if field.get("choices") else None)


_CASTS: dict[str, Callable[[Any], Any]] = {"toggle": lambda v: v if isinstance(v, bool) else {"true": True, "false": False}[str(v).lower()],
          "int": int, "float": float, "select": str, "text": str}


def widget_value(w: Widget, raw: Any) -> tuple[Any, str | None]:
    """``raw`` (a URL string or a stored value) as the widget's value, or (default, problem) when
    the widget cannot show it: wrong type, out of its bounds, or not one of its options."""
    try:
        value = _CASTS[w.kind](raw)
    except (KeyError, TypeError, ValueError):
        return w.default, f"{w.name}={raw!r} is not a valid {w.kind} value"
    if w.options is not None and value not in w.options:
        return w.default, f"{w.name}={raw!r} is not one of {list(w.options)}"
    if (w.low is not None and value < w.low) or (w.high is not None and value > w.high):
        return w.default, f"{w.name}={raw!r} is outside [{w.low}, {w.high}]"
    return value, None


def grouped(schema: Sequence[Mapping[str, Any]]) -> dict[str, list[Widget]]:
    """Widgets by the field's ``group`` ("main" first, then in declaration order)."""
    groups: dict[str, list[Widget]] = {"main": []}
    for field in schema:
        groups.setdefault(field.get("group") or "main", []).append(widget(field))
    return {name: items for name, items in groups.items() if items}


def with_defaults(schema: list[Mapping[str, Any]], defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The schema with each field's default replaced by its value in ``defaults``: the values an
    explainer resolves to on one model under one preset (``loupe.resolved_params``), so a form shows
    the values that will run (not 0 for "auto") and a URL leaves exactly those out."""
    return [{**f, "default": defaults.get(f["name"], f["default"])} for f in schema]


def with_choices(schema: list[Mapping[str, Any]], choices: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """``schema`` with the free-text fields named in ``choices`` turned into selects of those
    options (a page knows, e.g., which explainers apply to the chosen model). A default that is not
    among the options becomes the first option."""
    out = []
    for field in schema:
        options = choices.get(field["name"])
        if options:
            default = field["default"] if field["default"] in options else options[0]
            field = {**field, "choices": list(options), "default": default}
        out.append(dict(field))
    return out


def to_query(explainer_id: str, values: Mapping[str, Any], schema: list[Mapping[str, Any]]) -> dict[str, str]:
    """``{"<explainer>.<param>": value}`` for the values that differ from their defaults."""
    defaults = {f["name"]: f["default"] for f in schema}
    return {f"{explainer_id}.{name}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in values.items() if name in defaults and value != defaults[name]}


def from_query(explainer_id: str, query: Mapping[str, str]) -> dict[str, str]:
    """The raw (string) values of ``explainer_id``'s params in ``query``; Params.from_dict coerces
    and validates them, so a bad or unknown one becomes a ParamError naming the parameter."""
    prefix = f"{explainer_id}."
    return {key[len(prefix):]: value for key, value in query.items() if key.startswith(prefix)}
