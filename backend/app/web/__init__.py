"""The dashboard at ``/`` and the API docs at ``/docs`` and ``/redoc``, all served without a CDN.

The dashboard's HTML, CSS and JavaScript modules are written here (``static/``). Swagger UI's and
ReDoc's scripts come from the ``fastapi-offline`` package, installed from PyPI with the service:
nothing third-party is committed, and no page asks another host for anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
DOCS_ASSETS_PACKAGE = "fastapi_offline"

#: The pages load nothing from another host (ReDoc's footer logo, from its CDN, is served as an empty data:
#: image instead: offline_redoc_script); the policy keeps them honest.
#: No page runs an inline script it was not served with: the dashboard has none (its code is
#: module files), and Swagger UI's start-up script is allowed by its hash alone. ReDoc runs its
#: search in a blob: worker. No site may frame a page (clickjacking Stop/Resume).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'{hashes}; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def page_headers(html: bytes = b"") -> dict[str, str]:
    """The security headers of a page: its policy (with the hash of each inline script in ``html``) and
    no framing, for browsers that only know X-Frame-Options too."""
    hashes = "".join(f" 'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
                     for body in _INLINE_SCRIPT.findall(html))
    return {"Content-Security-Policy": CONTENT_SECURITY_POLICY.format(hashes=hashes), "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def docs_assets_dir() -> Path:
    """Where Swagger UI's and ReDoc's files are installed."""
    return Path(str(files(DOCS_ASSETS_PACKAGE) / "static"))


def mount_web(app: FastAPI) -> None:
    """Serve the dashboard and the offline API docs on ``app`` (created with ``docs_url=None, redoc_url=None``)."""
    @app.get("/static/docs/redoc.standalone.js", include_in_schema=False)
    def redoc_script() -> Response:
        # Before the static mount, which would serve the file as installed.
        return Response(offline_redoc_script(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=3600"})

    app.mount("/static/web", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.mount("/static/docs", StaticFiles(directory=docs_assets_dir()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        # no-cache: the page is tiny and must match the server's API after an upgrade.
        return FileResponse(STATIC_DIR / "index.html",
                            headers={"Cache-Control": "no-cache", **page_headers()})

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _with_policy(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js", swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/docs/favicon.png",
        ))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _with_policy(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} - ReDoc", redoc_js_url="/static/docs/redoc.standalone.js",
            redoc_favicon_url="/static/docs/favicon.png", with_google_fonts=False,
        ))


@functools.cache
def offline_redoc_script() -> bytes:
    """ReDoc's script with its footer logo pointed at an empty data: image instead of its CDN: the policy
    would block the fetch with a console error; the logo's own error handler then leaves it out."""
    script = (docs_assets_dir() / "redoc.standalone.js").read_bytes()
    return script.replace(REDOC_CDN_LOGO, b"data:,")


def _with_policy(response: HTMLResponse) -> HTMLResponse:
    response.headers.update(page_headers(response.body))
    return response
