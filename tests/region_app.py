"""The app that tests/test_regions.py runs in ``perdure worker --region`` subprocesses.

Run as ``perdure worker region_app:app --region eu`` with ``tests/`` importable; the
regions' databases come from ``PERDURE_EU_URL`` and ``PERDURE_US_URL``. A workflow
records which process ran it (its step returns the PID), starts a child, and waits
for a message, so that the test sees where each part of it ran and was stored.
"""

from __future__ import annotations

import os

import perdure


def build(urls: dict[str, str]) -> perdure.App:
    """The app on these regions' databases (the test builds its own client with it)."""
    app = perdure.App(regions=urls, poll_interval=0.05, shutdown_grace=2.0)

    @app.step
    def where(secret: str) -> dict[str, object]:
        """The PID of the process running this step, with the secret it was given."""
        return {"pid": os.getpid(), "secret": secret}

    @app.workflow(name="child")
    def child(secret: str) -> dict[str, object]:
        """A child: runs its step where its parent's region is served."""
        return where(f"child of {secret}")

    @app.workflow(name="parent")
    def parent(secret: str) -> dict[str, object]:
        """Runs a step, a child, and waits for a message on ``reply``."""
        mine = where(secret)
        theirs = app.start(child, secret).result()
        perdure.set_event("progress", f"waiting: {secret}")
        reply = perdure.recv("reply", timeout=120)
        return {"parent": mine, "child": theirs, "reply": reply}

    return app


if "PERDURE_EU_URL" in os.environ:
    app = build({"eu": os.environ["PERDURE_EU_URL"], "us": os.environ["PERDURE_US_URL"]})
