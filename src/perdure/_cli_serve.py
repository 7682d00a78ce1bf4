"""``perdure serve``: the HTTP API and the dashboard of an app, on uvicorn.

``perdure.web`` needs the optional extra ``perdure[web]`` (FastAPI and uvicorn), so it is
imported only when the command runs (``importlib``): every other command works without
it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from ._cli_common import ScrubbingFormatter, fail, load_app, shown
from ._errors import ConfigurationError


def _web() -> tuple[Any, Any]:
    try:
        return importlib.import_module("perdure.web"), importlib.import_module("uvicorn")
    except ImportError as exc:
        fail(f"perdure serve needs the web extra ({exc}): pip install 'perdure[web]'")


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="PERDURE_API_TOKEN",
    help="Bearer token every request must carry (or PERDURE_API_TOKEN); required to "
    "listen on any address but this machine's.",
)
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
def serve(app_spec: str, host: str, port: int, token: str | None, log_level: str) -> None:
    """Serve the dashboard (at /) and the HTTP API (JSON under /api, schema at
    /openapi.json) of MODULE:APP.

    It listens on 127.0.0.1 unless --host says otherwise, and refuses any other address
    without a token. It does not run workflows: run `perdure worker` beside it.
    """
    web, uvicorn = _web()
    try:
        web.check_bind(host, token)
        api = web.create_app(load_app(app_spec), token=token)
    except ConfigurationError as exc:
        fail(str(exc))
    handler = logging.StreamHandler()
    handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    auth = "a bearer token" if token else "no token (this machine only)"
    click.echo(
        f"perdure dashboard and API for {shown(app_spec)} on http://{shown(host)}:{port}/ "
        f"with {auth}",
        err=True,
    )
    uvicorn.run(api, host=host, port=port, log_level=log_level.lower(), log_config=None)
