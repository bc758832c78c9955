"""A SearXNG instance's JSON API (``/search?format=json``; the instance must list ``json`` in
``search.formats``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class SearchBackendError(RuntimeError):
    """SearXNG did not answer, or not with JSON results."""


@dataclass(frozen=True, slots=True)
class Hit:
    url: str
    title: str
    snippet: str
    engine: str


def parse_results(document: Any) -> list[Hit]:
    """The hits of a SearXNG answer; entries without a string URL are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise SearchBackendError("not a SearXNG JSON answer")
    hits: list[Hit] = []
    for item in document["results"]:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        engine = item.get("engine") or ",".join(item.get("engines") or []) or "unknown"
        hits.append(
            Hit(
                url=item["url"],
                title=str(item.get("title") or ""),
                snippet=str(item.get("content") or ""),
                engine=str(engine),
            )
        )
    return hits


class SearxngClient:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)

    async def search(self, query: str, *, language: str | None = None, page: int = 1) -> list[Hit]:
        params: dict[str, str | int] = {"q": query, "format": "json", "pageno": page, "safesearch": 1}
        if language:
            params["language"] = language
        try:
            response = await self._http.get("/search", params=params)
            response.raise_for_status()
            return parse_results(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            # The type only: an HTTP error's text may quote the URL, and with it the query.
            raise SearchBackendError(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self._http.aclose()
