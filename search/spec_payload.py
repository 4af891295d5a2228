"""What a raw JSON payload must be before it is a study spec: not too many items, every
value storable in both databases, every field valid, and numbers and booleans written as such.

Why apart from search.studies: these checks need nothing but the payload (no dataset, no
catalog), and `tune()` runs them too before it touches any data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from search.errors import FieldError, SpecError
from search.spec import StudySpec, field_path, parse_spec

#: At most this many problems are listed per check, so a huge bad body gets a short answer.
MAX_REPORTED = 20
#: Keys and list items a spec may hold outside `task.plugin_args` (a real one has under 200):
#: past this, validating would cost an error per extra entry, so one error says so instead.
MAX_SPEC_ITEMS = 10_000
FREE_FORM = "task.plugin_args"  # the plugin validates it; bounded by its size as JSON


def parse_payload(payload: dict[str, Any]) -> StudySpec:
    """The spec from raw JSON, or one SpecError listing every bad field (unstorable values
    included); then a number or boolean written as another type is refused."""
    _check_item_count(payload)
    unstorable = _unstorable_fields(payload)
    try:
        spec = parse_spec(payload)
    except SpecError as exc:
        bad = {e.field for e in unstorable}  # one reason per value: why it cannot be stored
        rest = [e for e in exc.errors if not any(_within(f, e.field) for f in bad)]
        raise SpecError(unstorable + rest, exc.more) from None
    if unstorable:
        raise SpecError(unstorable)
    _check_strict_types(payload)
    return spec


def _within(field: str, parent: str) -> bool:
    """`field` is `parent` or inside it (a range's `high` is inside the range)."""
    return field == parent or field.startswith(parent + ".")


def _check_item_count(payload: dict[str, Any]) -> None:
    """At most MAX_SPEC_ITEMS keys and list items (the walk stops there): the error names the
    largest container seen, where the flood most likely is."""
    counted = 0
    largest = (0, "body")
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, node = stack.pop()
        if path == FREE_FORM or not isinstance(node, dict | list):
            continue
        counted += len(node)
        largest = max(largest, (len(node), path or "body"))
        if counted > MAX_SPEC_ITEMS:
            break
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend(
            (f"{path}.{key}" if path else str(key), value)
            for key, value in items
            if isinstance(value, dict | list)
        )
    if counted > MAX_SPEC_ITEMS:
        size, where = largest
        message = (
            f"a study spec holds at most {MAX_SPEC_ITEMS} keys and list items in all "
            f"({FREE_FORM} aside); this one has more ({size} here)"
        )
        raise SpecError([FieldError(where, message)])


def _unstorable_fields(payload: Any) -> list[FieldError]:
    """Every string must be storable text and every number finite, in both databases.

    Why: PostgreSQL refuses NUL in text and JSONB, and JSON has no NaN; such a spec would
    otherwise fail at INSERT as a 500. Each bad value is named by its dotted path.
    """
    errors: list[FieldError] = []
    for path, value in _walk(payload):
        message = unstorable_reason(value)
        if message:
            errors.append(FieldError(path or "body", message))
            if len(errors) >= MAX_REPORTED:
                break
    return errors


def _walk(payload: Any) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every key and leaf, iteratively (depth cannot blow the stack)."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                child = f"{path}.{key}" if path else str(key)
                yield child, key
                stack.append((child, value))
        elif isinstance(node, list):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node))
        else:
            yield path, node


def unstorable_reason(value: Any) -> str | None:
    """Why this value cannot be stored as JSON in both databases (None when it can)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text"
    return None


def _check_strict_types(payload: dict[str, Any]) -> None:
    """A number or boolean written as another type is refused: lax parsing would read `true`
    as 1, `"3"` as 3 and `"yes"` or `1` as true, and a typo would pass silently."""
    try:
        StudySpec.model_validate(payload, strict=True)
    except ValidationError as exc:
        errors = [
            FieldError(field_path(err["loc"]), reason)
            for err in exc.errors()
            if (reason := _type_mismatch(err["type"], err.get("input"))) is not None
        ]
        if errors:
            raise SpecError(errors) from None
    except Exception:  # lax parsing already accepted the spec; strictness is best effort
        return


def _type_mismatch(error_type: str, value: Any) -> str | None:
    """The reason a value lax parsing accepted has the wrong JSON type (None: not that case)."""
    if error_type in ("int_type", "float_type"):
        if isinstance(value, bool):
            return "must be a number, not a boolean"
        if isinstance(value, str):
            return "must be a number, not a string"
    if error_type == "bool_type" and isinstance(value, (str, int, float)):
        return f"must be true or false, not {value!r}"
    return None
