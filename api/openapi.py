"""The API contract: an OpenAPI 3.1 document served at `GET /openapi.json` (no key needed).

Built from a small registry of operations, each naming the pydantic models that validate its
request and shape its answer, so that the document follows the code. A test fails when a route
of the app is not registered, and the test command fuzzes the running service against the
document with schemathesis (no 5xx, every answer conforms).

Registering a new route (next to its handler):

    openapi.register(
        "POST", "/batch/jobs/{batch_job_id}/frobnicate",
        "Frobnicate a job",
        body=FrobnicateBody,                  # a pydantic model (optional_body=True: may be absent)
        ok=FrobnicateAnswer,                  # the 200 answer's model (status=201 to change it)
        errors={400: ["job_not_frobnicable"], 404: ["job_not_found"]},
    )

Every operation also documents 401 unauthorized, 429 rate_limited / quota_exceeded and 413
payload_too_large in its family's error envelope (chosen by path prefix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from api import schemas

ROUTE = "/openapi.json"


class OpenApiDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    openapi: str
    paths: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    optional_body: bool = False
    form: type[BaseModel] | None = None  # multipart/form-data fields (a `file` part added)
    query: type[BaseModel] | None = None
    ok: type[BaseModel] | None = None
    ok_content: str = "application/json"
    status: int = 200
    errors: dict[int, list[str]] = field(default_factory=dict)
    public: bool = False
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> schema
    # OpenAPI links from the answer: {link name: (operationId, {parameter: expression})}
    links: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)


OPERATIONS: dict[tuple[str, str], Operation] = {}


def register(
    method: str,
    path: str,
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    optional_body: bool = False,
    form: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    ok: type[BaseModel] | None = None,
    ok_content: str = "application/json",
    status: int = 200,
    errors: dict[int, list[str]] | None = None,
    public: bool = False,
    headers: dict[str, dict[str, Any]] | None = None,
    links: dict[str, tuple[str, dict[str, str]]] | None = None,
) -> None:
    """Describe one route (method and path as given to the router)."""
    OPERATIONS[(method.upper(), path)] = Operation(
        method.upper(),
        path,
        summary,
        body,
        optional_body,
        form,
        query,
        ok,
        ok_content,
        status,
        errors or {},
        public,
        headers or {},
        links or {},
    )


# Error envelopes by path prefix (the same families as api.errors / api.compat).
_ENVELOPES: tuple[tuple[str, type[BaseModel]], ...] = (
    ("/v1/voiceai/batch-calling/", schemas.BatchCallingError),
    ("/v1/convai/batch-calling/", schemas.BatchCallingError),
    ("/api/v1/public/call-batches/", schemas.CallBatchesError),
    ("", schemas.ErrorEnvelope),
)

_COMMON_ERRORS = {
    401: ["unauthorized"],
    413: ["payload_too_large"],
    429: ["rate_limited", "quota_exceeded"],
}


class _Schemas:
    """Collects model schemas into components and answers references to them."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        name = model.__name__
        if name not in self.components:
            self.components[name] = self.inline(model)
        return {"$ref": f"#/components/schemas/{name}"}

    def inline(self, model: type[BaseModel]) -> dict[str, Any]:
        """The model's schema, the models it refers to moved into components."""
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            self.components.setdefault(sub_name, sub)
        return schema


def _parameters(op: Operation, schemas_: _Schemas) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for segment in op.path.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            params.append(
                {
                    "name": segment[1:-1],
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                }
            )
    for name, schema_ in op.headers.items():
        params.append({"name": name, "in": "header", "required": False, "schema": schema_})
    if op.query is not None:
        schema = schemas_.inline(op.query)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": _not_null(prop),
                }
            )
    return params


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: `X | None` is documented as X."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [o for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
            return {**rest, **kept[0]}
    return {k: v for k, v in schema.items() if not (k == "default" and v is None)}


def operation_id(method: str, path: str) -> str:
    """`post_batch_jobs_batch_job_id_cancel` for POST /batch/jobs/{batch_job_id}/cancel."""
    words = path.strip("/").replace("{", "").replace("}", "").replace(".", "_").split("/")
    return "_".join([method.lower(), *words])


def _error_response(envelope: type[BaseModel], codes: list[str], s: _Schemas) -> dict[str, Any]:
    return {
        "description": "Error: " + ", ".join(f"`{c}`" for c in codes),
        "content": {"application/json": {"schema": s.ref(envelope)}},
    }


def _operation(op: Operation, s: _Schemas) -> dict[str, Any]:
    envelope = next(model for prefix, model in _ENVELOPES if op.path.startswith(prefix))
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}_{op.path.strip('/').replace('/', '_')}".replace(
            "{", ""
        ).replace("}", ""),
        "parameters": _parameters(op, s),
        "responses": {},
    }
    content: dict[str, Any] = {}
    if op.body is not None:
        content["application/json"] = {"schema": s.ref(op.body)}
    if op.form is not None:
        form_schema = s.inline(op.form)
        form_schema["properties"] = {
            **form_schema["properties"],
            "file": {"type": "string", "format": "binary"},
        }
        form_schema["required"] = [*form_schema.get("required", []), "file"]
        form_schema["title"] = f"{op.form.__name__} with a CSV file"
        content["multipart/form-data"] = {"schema": form_schema}
    if content:
        out["requestBody"] = {"required": not op.optional_body, "content": content}
    ok_schema: dict[str, Any] = s.ref(op.ok) if op.ok is not None else {"type": "string"}
    out["responses"][str(op.status)] = {"description": op.summary}
    if op.status != 204:  # No Content has no body
        out["responses"][str(op.status)]["content"] = {op.ok_content: {"schema": ok_schema}}
    if op.links:
        out["responses"][str(op.status)]["links"] = {
            name: {"operationId": target, "parameters": params}
            for name, (target, params) in op.links.items()
        }
    errors = {} if op.public else dict(_COMMON_ERRORS)
    for status, codes in op.errors.items():
        errors[status] = [*errors.get(status, []), *codes]
    for status, codes in sorted(errors.items()):
        out["responses"][str(status)] = _error_response(envelope, codes, s)
    if not op.public:
        out["security"] = [{"apiKey": []}, {"bearer": []}]
    return out


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of the routes this app serves."""
    s = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes_of(app):
        op = OPERATIONS.get((method, path))
        if op is not None:
            paths.setdefault(path, {})[method.lower()] = _operation(op, s)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Batch dialer",
            "version": "1",
            "description": "Outbound calling campaigns for AI voice agents. See the README.",
        },
        "paths": paths,
        "components": {
            "schemas": s.components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def routes_of(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route the app answers (HEAD, added for GETs, left out)."""
    found: list[tuple[str, str]] = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or not isinstance(path, str):
            continue
        found.append((route.method, path))
    return found


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


def setup(app: web.Application) -> None:
    app.router.add_get(ROUTE, serve)
