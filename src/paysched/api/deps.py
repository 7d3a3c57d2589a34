"""What every route shares: the App it drives, and the problems it may answer with."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from paysched.api.models import Out
from paysched.app import App

# Problem documents, as OpenAPI knows them (the same schema for every status).


class ProblemDoc(Out):
    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str
    request_id: str
    field: str | None = None
    errors: list[dict[str, str]] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: its problems in application/problem+json."""
    common = (400, 401, 403, 422, 429, 503)
    schema = {"schema": {"$ref": "#/components/schemas/ProblemDoc"}}
    return {
        status: {"model": ProblemDoc, "content": {"application/problem+json": schema}}
        for status in sorted({*common, *statuses})
    }


def links(status: int, **targets: tuple[str, dict[str, str]]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI links of a response: where its ids lead (clients and schemathesis follow them).
    `name=(operationId, {parameter: runtime expression})`."""
    return {
        status: {
            "links": {
                name: {"operationId": operation, "parameters": parameters}
                for name, (operation, parameters) in targets.items()
            }
        }
    }


def paysched(request: Request) -> App:
    app: App = request.app.state.paysched
    return app
