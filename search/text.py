"""The one rule for names a user gives (studies, datasets, models): printable text.

Why: PostgreSQL refuses NUL, and a name is printed back in terminals (`lrsearch status`),
where control and format characters (ESC sequences, CR, bidi overrides) would retitle the
window, clear the screen or forge lines.
"""

from __future__ import annotations

PRINTABLE_MESSAGE = "must be printable text (no NUL or control characters)"


def printable(text: str) -> bool:
    """No NUL, control, format (bidi overrides) or separator characters but the space."""
    return text.isprintable()
