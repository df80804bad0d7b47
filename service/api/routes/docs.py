"""The API docs: Swagger UI at `/docs` and ReDoc at `/redoc`, from files inside the package.

FastAPI's own pages load their scripts from a CDN, so they are blank offline. These are the
same pages (FastAPI's `get_swagger_ui_html` / `get_redoc_html`) pointed at copies of
swagger-ui-dist and redoc under `service/static/vendor/` (served by the playground's
`/static` mount; versions, licences and how to refresh them: that folder's README.md). A
Content-Security-Policy holds each page to its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse

SWAGGER_UI_PATH = "/docs"
REDOC_PATH = "/redoc"
VENDOR_URL = "/static/vendor"
# What the pages need: the schema and "Try it out" calls on this origin, data: images in
# Swagger UI, inline styles (both inject them), and ReDoc's search worker (a blob: URL).
# Inline scripts are allowed by their hash only.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' {script_hashes}; worker-src 'self' blob:; connect-src 'self'; "
    "font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """The page with a CSP that allows its own inline scripts (by hash) and nothing remote."""
    html = bytes(page.body).decode("utf-8")
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    page.headers["Content-Security-Policy"] = _CSP.format(script_hashes=hashes)
    page.headers["Cache-Control"] = "no-cache"
    return page


def mount_docs(app: FastAPI) -> None:
    """Serve Swagger UI and ReDoc for `app.openapi_url` (create the app with `docs_url=None,
    redoc_url=None`, so FastAPI's CDN pages are not registered)."""
    title = f"{app.title} API"

    def root(request: Request) -> str:
        prefix: str = request.scope.get("root_path", "")  # behind a proxy that strips one
        return prefix

    def schema_url(request: Request) -> str:
        return root(request) + (app.openapi_url or "/openapi.json")

    def vendor(request: Request, path: str) -> str:
        return f"{root(request)}{VENDOR_URL}/{path}"

    @app.get(SWAGGER_UI_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        """Swagger UI: the operations, with "Try it out"."""
        return _with_policy(
            get_swagger_ui_html(
                openapi_url=schema_url(request),
                title=title,
                swagger_js_url=vendor(request, "swagger-ui/swagger-ui-bundle.js"),
                swagger_css_url=vendor(request, "swagger-ui/swagger-ui.css"),
                swagger_favicon_url=vendor(request, "swagger-ui/favicon-32x32.png"),
            )
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        """ReDoc: the same document as one reference page."""
        return _with_policy(
            get_redoc_html(
                openapi_url=schema_url(request),
                title=title,
                redoc_js_url=vendor(request, "redoc/redoc.standalone.js"),
                redoc_favicon_url=vendor(request, "swagger-ui/favicon-32x32.png"),
                with_google_fonts=False,
            )
        )
