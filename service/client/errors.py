"""The errors the client raises on purpose, so that callers (the CLI) can tell them apart:
an API answer (`ApiError`), no answer (`CannotConnect`), or a bad local file (`InputFileError`).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from service.client.display import shown


class ClientError(Exception):
    """Base of the errors this client raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field of a request, as the API's `errors` list reports it."""

    field: str
    message: str


class ApiError(ClientError):
    """The API answered with an error: the RFC 9457 problem fields, ready to show a user."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[FieldProblem] | None = None,
        type: str = "about:blank",
        more_errors: int = 0,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        self.more_errors = more_errors
        super().__init__(self.message())

    def message(self) -> str:
        """`status title: detail` followed by one line per bad field (and how many more);
        the server's text with its non-printable characters escaped, for a terminal."""
        head = f"{self.status} {shown(self.title)}"
        head += f": {shown(self.detail)}" if self.detail else ""
        more = [f"  ... and {self.more_errors} more"] if self.more_errors else []
        fields = [f"  {shown(e.field)}: {shown(e.message)}" for e in self.errors]
        return "\n".join([head, *fields, *more])

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Read a problem document; a non-problem body still gives status and reason."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()[:500]
            return cls(response.status_code, response.reason_phrase or "error", text)
        errors = [
            FieldProblem(str(e.get("field", "")), str(e.get("message", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        return cls(
            status=int(body.get("status") or response.status_code),
            title=str(body.get("title") or response.reason_phrase or "error"),
            detail=str(body.get("detail") or ""),
            errors=errors,
            type=str(body.get("type") or "about:blank"),
            more_errors=_count(body.get("more_errors")),
        )


def _count(value: object) -> int:
    """A non-negative count from a problem document (anything else reads as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class CannotConnect(ClientError):
    """No HTTP answer at all: wrong URL, server down, or a network timeout."""


class InputFileError(ClientError):
    """A local file (spec, model, dataset) cannot be read or parsed; nothing was sent."""
