"""Plain-text tables, shared by the commands that list things (trials, datasets); every cell
is server text, shown with its non-printable characters escaped."""

from __future__ import annotations

from collections.abc import Sequence

from service.client.display import shown


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None
) -> str:
    """Columns padded to their widest cell; columns in `right` (numbers) right-aligned."""
    right = right or set()
    headers = [shown(h) for h in headers]
    rows = [[shown(c) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        out = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])
