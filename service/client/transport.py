"""The connection to the API: one authenticated call, and the cursor pages of a listing.

Every non-2xx answer becomes `ApiError` and a missing answer `CannotConnect`, here and
nowhere else, so the resource calls (studies, datasets) never see raw httpx errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx

from service.client.errors import ApiError, CannotConnect, InputFileError

DEFAULT_URL = "http://127.0.0.1:8000"


class Transport:
    """The connection under `Client` (whose docstring explains `url`, `token` and `http`)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owned = http is None
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (only if this client opened it)."""
        if self._owned:
            self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; errors become ApiError (an answer) or CannotConnect (no answer)."""
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise CannotConnect(f"cannot reach {self.url}: {exc}") from None
        if response.is_error:
            raise ApiError.from_response(response)
        return response

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Follow `next_cursor` until the API says there is no more."""
        params = dict(params)
        while True:
            page = self.request("GET", path, params=params).json()
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def _upload(self, route: str, path: str | Path, form: dict[str, str]) -> dict[str, Any]:
        """POST a local file as the multipart field `file` (with `form`); the record made.
        A file that cannot be read is an InputFileError, before anything is sent."""
        path = Path(path)
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        with handle:
            files = {"file": (path.name, handle, "application/octet-stream")}
            return dict(self.request("POST", route, files=files, data=form).json())
