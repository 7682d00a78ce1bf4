"""Who may use the dashboard's pages, and which page may change anything.

A browser cannot send the API's bearer header, so the pages use a session cookie:
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page or link
carries it) and ``Secure`` over HTTPS. With a token, the operator gets one by typing the
token into the login form; without a token (this machine only), every visitor gets one on
the first page. A session is ``nonce.issued.mac``: a MAC under a key derived from the
token, so sessions survive a restart and work on every replica, and changing the token
ends them all (without a token the key is random: they end with the process).

Every change (``POST``) is checked twice against cross-site request forgery: it must
carry the session's CSRF token (a MAC of the session's nonce, sent in a hidden form field
or the ``X-CSRF-Token`` header, which another site cannot read), and its ``Origin`` (or
``Sec-Fetch-Site``) must be this site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

#: The cookie's name, and how long a session lasts.
COOKIE = "perdure_session"
SESSION_SECONDS = 12 * 3600
#: The form field and the header that carry the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    """A valid session: its nonce, and the CSRF token that goes with it."""

    nonce: str
    csrf: str
    #: The cookie value to set: a new session, not yet in the browser (else None).
    new_cookie: str | None = None


class Sessions:
    """Minting and checking session cookies and CSRF tokens for one dashboard."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        if token is None:
            self._key = secrets.token_bytes(32)
        else:
            # Derived, not the token itself: a session MAC reveals nothing of the token.
            self._key = hmac.new(token.encode(), b"perdure dashboard sessions", "sha256").digest()

    @property
    def needs_login(self) -> bool:
        """Whether a browser must log in with the token first."""
        return self.token is not None

    def _mac(self, purpose: str, *parts: str) -> str:
        message = "\x00".join((purpose, *parts)).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def mint(self) -> Session:
        """A new session (its cookie in ``new_cookie``)."""
        nonce = secrets.token_urlsafe(24)
        issued = str(int(time.time()))
        cookie = f"{nonce}.{issued}.{self._mac('session', nonce, issued)}"
        return Session(nonce, self._mac("csrf", nonce), cookie)

    def check_token(self, given: str) -> bool:
        """Whether ``given`` is the token (in constant time)."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def of(self, request: Request) -> Session | None:
        """The request's session, when its cookie is one this dashboard made and is not
        older than ``SESSION_SECONDS``."""
        cookie = request.cookies.get(COOKIE, "")
        nonce, _, rest = cookie.partition(".")
        issued, _, mac = rest.partition(".")
        if not (nonce and issued.isdigit() and mac):
            return None
        if not hmac.compare_digest(mac, self._mac("session", nonce, issued)):
            return None
        if not 0 <= time.time() - int(issued) <= SESSION_SECONDS:
            return None
        return Session(nonce, self._mac("csrf", nonce))

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        """Whether ``given`` is the session's CSRF token."""
        return given is not None and hmac.compare_digest(given, session.csrf)


def same_origin(request: Request) -> bool:
    """Whether a change comes from a page of this site: its ``Origin`` names this host,
    or (no ``Origin``) ``Sec-Fetch-Site`` says same-origin. A browser sends at least one
    of them with every form or script POST; a client that sends neither is not a browser
    page and still needs the session and its CSRF token."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin is not None:
        # Compared by host and port, not scheme: behind a TLS proxy the request arrives
        # as http for a page loaded over https.
        return origin != "null" and urlsplit(origin).netloc.lower() == host.lower()
    site = request.headers.get("sec-fetch-site")
    return site is None or site in ("same-origin", "none")


def set_cookie(request: Request, response: Response, value: str) -> None:
    """Give the browser its session cookie, scoped to where the dashboard is mounted."""
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    """End the browser's session."""
    response.delete_cookie(
        COOKIE,
        path=request.scope.get("root_path") or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


#: Headers of every page: scripts and styles of this site only (htmx runs with eval off),
#: never framed, never cached (pages show live data and a CSRF token).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
