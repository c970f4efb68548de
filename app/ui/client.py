"""The dashboard's only way to the backend: a typed HTTP client for the RadCheck API.

Every failure becomes an :class:`ApiError` whose ``kind`` tells the page what to say (API down,
timeout, session ended, not allowed, not found, invalid input, server error).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, TypedDict, cast

import httpx

__all__ = [
    "ApiClient",
    "ApiError",
    "ErrorKind",
    "Flag",
    "RenderedImage",
    "Review",
    "WorklistFilters",
]

ErrorKind = Literal[
    "unreachable",
    "timeout",
    "unauthorized",
    "forbidden",
    "not_found",
    "invalid",
    "locked",
    "server",
]


class ApiError(Exception):
    """A failed API call: ``kind``, the HTTP status (0 when no answer) and the API's own detail."""

    def __init__(self, kind: ErrorKind, status: int, detail: str, request_id: str = "-") -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        self.detail = detail
        self.request_id = request_id


class Review(TypedDict):
    id: int
    decision: str
    reason: str | None
    comment: str | None
    reviewer: str
    created_at: str


class Flag(TypedDict):
    id: int
    check_job_id: int
    subtype: str
    complex_class: str
    severity: str
    source: str
    rule_id: str
    message: str
    section: str | None
    sentence_index: int | None
    span_start: int | None
    span_end: int | None
    confidence: float
    evidence: dict[str, Any]
    reviews: list[Review]
    ai_generated: bool
    verification_status: str


@dataclass(frozen=True)
class WorklistFilters:
    status: str | None = None
    severity: str | None = None
    subtype: str | None = None
    review: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    accession_number: str | None = None

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in vars(self).items():
            if value not in (None, ""):
                out[key] = value.isoformat() if isinstance(value, date) else str(value)
        return out


@dataclass(frozen=True)
class RenderedImage:
    content: bytes
    media_type: str
    width: int
    height: int
    original_width: int
    original_height: int
    window_center: str
    window_width: str
    window_source: str


_KINDS: dict[int, ErrorKind] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    422: "invalid",
    423: "locked",
}


class ApiClient:
    """One RadCheck API, one credential (a session token, an OIDC ID token or an API key)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise ApiError(
                "timeout", 0, f"The RadCheck API at {self.base_url} did not answer in time."
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                "unreachable",
                0,
                f"The RadCheck API at {self.base_url} is not reachable ({type(exc).__name__}).",
            ) from None
        if response.status_code >= 400:
            detail, request_id = response.text[:500], response.headers.get("X-Request-ID", "-")
            try:
                body = response.json()
                detail = str(body.get("detail", detail))
                request_id = str(body.get("request_id", request_id))
            except ValueError:
                pass
            kind = _KINDS.get(
                response.status_code, "server" if response.status_code >= 500 else "invalid"
            )
            raise ApiError(kind, response.status_code, detail, request_id)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # People
    def login(self, username: str, password: str) -> dict[str, Any]:
        body = cast(
            dict[str, Any],
            self._json("POST", "/auth/login", json={"username": username, "password": password}),
        )
        self.token = str(body["token"])
        return body

    def logout(self) -> None:
        self._request("POST", "/auth/logout")
        self.token = None

    def me(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", "/auth/me"))

    # Worklist and studies
    def worklist(
        self, filters: WorklistFilters, *, limit: int = 25, offset: int = 0
    ) -> dict[str, Any]:
        params = {**filters.params(), "limit": str(limit), "offset": str(offset)}
        return cast(dict[str, Any], self._json("GET", "/worklist", params=params))

    def next_study(self, filters: WorklistFilters, after: str | None = None) -> str | None:
        params = {k: v for k, v in filters.params().items() if k != "review"}
        if after:
            params["after"] = after
        body = self._json("GET", "/worklist/next", params=params)
        return cast(str | None, body["study_instance_uid"])

    def study(self, uid: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/studies/{uid}"))

    def report_diff(self, uid: str, from_version: int, to_version: int) -> dict[str, Any]:
        params = {"from_version": from_version, "to_version": to_version}
        return cast(dict[str, Any], self._json("GET", f"/studies/{uid}/report-diff", params=params))

    def rendered(
        self,
        sop_uid: str,
        *,
        preset: str = "default",
        center: float | None = None,
        width: float | None = None,
        invert: bool = False,
        size: int = 1024,
    ) -> RenderedImage:
        params: dict[str, str] = {
            "preset": preset,
            "invert": str(invert).lower(),
            "size": str(size),
        }
        if center is not None and width is not None:
            params.update(center=str(center), width=str(width))
        r = self._request("GET", f"/instances/{sop_uid}/rendered", params=params)
        h = r.headers
        return RenderedImage(
            content=r.content,
            media_type=h.get("content-type", "image/png"),
            width=int(h["X-Image-Width"]),
            height=int(h["X-Image-Height"]),
            original_width=int(h["X-Original-Width"]),
            original_height=int(h["X-Original-Height"]),
            window_center=h.get("X-Window-Center", ""),
            window_width=h.get("X-Window-Width", ""),
            window_source=h.get("X-Window-Source", ""),
        )

    # Decisions and checks
    def review(
        self, flag_id: int, decision: str, *, reason: str | None = None, comment: str | None = None
    ) -> Review:
        body: dict[str, Any] = {"decision": decision}
        if reason:
            body["reason"] = reason
        if comment:
            body["comment"] = comment
        return cast(Review, self._json("POST", f"/flags/{flag_id}/reviews", json=body))

    def review_history(self, flag_id: int) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._json("GET", f"/flags/{flag_id}/reviews"))

    def request_check(self, uid: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("POST", f"/studies/{uid}/checks", json={}))

    def check_report(self, body: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("POST", "/check-report", json=body))

    # Feedback
    def feedback(self, date_from: date | None, date_to: date | None) -> dict[str, Any]:
        return cast(
            dict[str, Any], self._json("GET", "/feedback/stats", params=_dates(date_from, date_to))
        )

    def feedback_csv(self, date_from: date | None, date_to: date | None) -> bytes:
        return self._request(
            "GET", "/feedback/stats.csv", params=_dates(date_from, date_to)
        ).content


def _dates(date_from: date | None, date_to: date | None) -> dict[str, str]:
    out = {}
    if date_from:
        out["date_from"] = date_from.isoformat()
    if date_to:
        out["date_to"] = date_to.isoformat()
    return out
