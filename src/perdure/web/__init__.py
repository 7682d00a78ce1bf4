"""perdure's HTTP API and dashboard (``pip install 'perdure[web]'``): see and repair
workflows over JSON, or in a browser.

``create_app(app, token=...)`` returns a FastAPI application for a ``perdure.App``; mount
it in your own ASGI app (``your_app.mount("/perdure", create_app(app, token=...))``) or
run it with ``perdure serve MODULE:APP``. Every endpoint is under ``/api``; the schema is
at ``/openapi.json``. With a token, every endpoint but the schema needs the header
``Authorization: Bearer <token>`` (compared in constant time); without one, only
requests addressed to this machine are answered. A change (``POST``) must be a JSON
request, which a web page cannot send to another site without asking (no CSRF).
Responses and errors are JSON; errors never show a database password nor a traceback.

The dashboard's pages are at ``/`` of the same application (``_pages``): with a token,
a browser logs in once with it and gets a session cookie; every action on a page needs
the session's CSRF token and this site's origin (``_session``).
"""

from __future__ import annotations

from ._api import create_app
from ._security import check_bind, is_loopback

__all__ = ["check_bind", "create_app", "is_loopback"]
