"""Server-provided text as a terminal may show it.

Why: names, errors and failure reasons come from the server (another tenant's worker, an old
row written before names had to be printable); printed raw, an ESC sequence could retitle
the window or clear the screen, and a CR or newline forge output lines.
"""

from __future__ import annotations


def shown(value: object, *, newlines: bool = False) -> str:
    """`str(value)` with every non-printable character escaped as Python writes it (`\\x1b`,
    `\\r`, `\\u202e`); with `newlines`, line breaks are kept (multi-line code)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or (newlines and c == "\n") else repr(c)[1:-1] for c in text
    )
