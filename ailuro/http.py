"""A small requests-based client of the ailuro REST API (`/api/v1/`). No Django here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests

from ailuro import __version__
from ailuro.config import ClientConfig


class ApiError(Exception):
    """A non-2xx answer (or no answer); `detail`, `field`, `line` and `column` come from the
    server's JSON error body when it sent one."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str = "",
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        code = f"HTTP {self.status}: " if self.status else ""
        return f"{code}{self.detail}{where}"


class _ProgressReader:
    """A sized body that reports how much of it was sent.

    Deliberately not an io class and not iterable: requests would stream an iterable with chunked
    transfer encoding, while an object with `read` and `__len__` is sent with a Content-Length,
    read in blocks by http.client.
    """

    def __init__(self, data: bytes, report: Callable[[int], None]) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._report = report

    def __len__(self) -> int:
        return len(self._data)

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else min(len(self._data), self._pos + size)
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        if chunk:
            self._report(len(chunk))
        return chunk


class Client:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"ailuro-cli/{__version__}"
        self.session.headers["Accept"] = "application/json"
        if config.token:
            self.session.headers["Authorization"] = f"Bearer {config.token}"
        self.session.verify = config.verify

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.config.url}/api/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.config.timeout)
        try:
            response = self.session.request(method, self.url(path), **kwargs)
        except requests.ConnectionError as exc:
            raise ApiError(0, f"cannot reach {self.config.url}: {exc.__class__.__name__}") from None
        except requests.Timeout:
            raise ApiError(0, f"{self.config.url} did not answer within {self.config.timeout:g} s") from None
        if response.status_code >= 400:
            raise _error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code, "the server answered with something that is not JSON"
            ) from None

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=dict(json or {}))

    def upload(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str,
        params: Mapping[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        data: Any = _ProgressReader(body, progress) if progress else body
        headers = {"Content-Type": content_type}
        return self.request("POST", path, data=data, headers=headers, params=params)

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> Iterator[Any]:
        """Every item of a keyset-paginated list, following `next` links (up to `limit` items)."""
        page = self.get(path, params)
        seen = 0
        while True:
            for item in page.get("results", []):
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            next_url = page.get("next")
            if not next_url:
                return
            page = self.get(next_url)


def _error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail")
        if detail is None and body:
            field, messages = next(iter(body.items()))
            message = messages[0] if isinstance(messages, list) and messages else messages
            return ApiError(response.status_code, f"{field}: {message}", field=str(field))
        return ApiError(
            response.status_code,
            str(detail or response.reason),
            field=str(body.get("field") or ""),
            line=body.get("line"),
            column=body.get("column"),
        )
    return ApiError(response.status_code, response.reason or "error")
