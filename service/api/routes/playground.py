"""The playground: a static page at `/` (and its assets under `/static/`) that calls the v1 API.

The files ship inside the package (`service/static/`) and load nothing from elsewhere; the
Content-Security-Policy holds the page to its own origin.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_PACKAGE = ("service", "static")
PLAYGROUND_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def mount_playground(app: FastAPI) -> None:
    """Serve the page at `/` and its scripts and styles at `/static/`."""
    page = (resources.files(STATIC_PACKAGE[0]) / STATIC_PACKAGE[1] / "index.html").read_bytes()
    headers = {"Content-Security-Policy": PLAYGROUND_CSP, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        """The playground page."""
        return HTMLResponse(page, headers=headers)

    app.mount("/static", StaticFiles(packages=[STATIC_PACKAGE]), name="static")
