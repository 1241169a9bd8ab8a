"""The Registry page's form values as a manifest entry: text fields parsed into lists and numbers
with messages that name the field, and empty optional fields left out. Pure."""
from __future__ import annotations

from typing import Any, Callable

from loupe import RegistrationError


def parse_list(text: str, cast: Callable[[str], Any], name: str) -> list[Any]:
    """``"3, 64, 64"`` -> ``[3, 64, 64]``; an item ``cast`` rejects raises RegistrationError."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise RegistrationError(f"{name} must be a comma-separated list of {cast.__name__} values, got {text!r}") from None


def entry_values(fields: dict[str, Any], lists: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Manifest values from form ``fields``: keys in ``lists`` are parsed with :func:`parse_list`
    (item type as given); empty strings, empty lists, None and False are left out."""
    values = {}
    for key, value in fields.items():
        if key in lists and isinstance(value, str):
            value = parse_list(value, lists[key], key)
        if value is None or value is False or (isinstance(value, (str, list)) and not value):
            continue
        values[key] = value.strip() if isinstance(value, str) else value
    return values
