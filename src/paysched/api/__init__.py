"""paysched's HTTP API (FastAPI): `paysched serve`, or `paysched run --api` beside the
scheduler and workers. `create_api(app)` builds it over an opened App."""

from paysched.api.app import create_api

__all__ = ["create_api"]
