"""The OpenAPI document, completed where FastAPI cannot see what the app really does.

Routes read their JSON bodies by hand (so malformed JSON is a 400 and NaN reaches our
checks), middleware answers 401 and 413, and one handler gives every error the same body.
FastAPI's generated document knows none of that; this fills it in, so that a client, a
generated SDK or schemathesis sees the requests and answers that actually happen.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
_BODY_ERRORS = {
    400: "Malformed JSON.",
    413: "Body, or number of images asked for, over the limit.",
    415: "Body labelled with a media type other than JSON.",
    422: "Invalid values.",
}
_UNAUTHORIZED = "Missing or wrong API key (only when the service has one configured)."
_INFERENCE_FAILED = "The model failed while running this request's images."


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _hoist_defs(node: Any, components: dict[str, Any]) -> Any:
    """Move pydantic's local `$defs` into components and point `$ref`s there: a `#/$defs/..`
    reference inside an operation would resolve against the document root, where none are."""
    if isinstance(node, list):
        return [_hoist_defs(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    for name, schema in node.pop("$defs", {}).items():
        components.setdefault(name, _hoist_defs(schema, components))
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
    return {key: _hoist_defs(value, components) for key, value in node.items()}


def complete_document(document: dict[str, Any], *, api_key_required: bool) -> dict[str, Any]:
    """The document with the service's real error answers and resolvable references."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    document["paths"] = _hoist_defs(document["paths"], components)
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, response in list(responses.items()):
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema == {"$ref": _FASTAPI_VALIDATION_REF}:
                    responses[status] = _error(_BODY_ERRORS[422])
            if "requestBody" in operation:
                for status, description in _BODY_ERRORS.items():
                    responses.setdefault(str(status), _error(description))
            if path.startswith("/v1"):
                responses.setdefault("401", _error(_UNAUTHORIZED))
                if api_key_required:
                    operation["security"] = [{"bearer": []}]
            if "504" in responses:  # the operation runs the model
                responses.setdefault("500", _error(_INFERENCE_FAILED))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    if api_key_required:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "The API key."}
        }
    return document


def install_openapi(app: FastAPI, *, api_key_required: bool) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(generate(), api_key_required=api_key_required)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
