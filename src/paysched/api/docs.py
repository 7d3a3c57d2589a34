"""/docs: Swagger UI from files installed with paysched (fastapi-offline's), not a CDN.

FastAPI's own /docs loads its script from a CDN with no Content-Security-Policy, so whoever
serves that script runs code on a page an operator opens beside an API key. Here the script,
its stylesheet and icon come from this server, and the page's CSP allows nothing else: its
one inline script (the Swagger UI set-up) by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS = "/docs"
FILES = f"{DOCS}/files"


def install_docs(api: FastAPI) -> None:
    """Serve Swagger UI at /docs for `api`'s OpenAPI document (create `api` with
    docs_url=None)."""
    assert api.openapi_url is not None
    page = get_swagger_ui_html(
        openapi_url=api.openapi_url,
        title=f"{api.title} - Swagger UI",
        swagger_js_url=f"{FILES}/swagger-ui-bundle.js",
        swagger_css_url=f"{FILES}/swagger-ui.css",
        swagger_favicon_url=f"{FILES}/favicon.png",
        swagger_ui_parameters=api.swagger_ui_parameters,
    )
    body = bytes(page.body)
    inline = re.findall(rb"<script>(.*?)</script>", body, re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in inline
    )
    # Swagger UI styles some elements inline and draws its icons as data: images.
    csp = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    )
    headers = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"}

    api.mount(FILES, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-files")

    @api.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(body, headers=headers)
