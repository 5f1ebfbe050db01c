"""The provider API's answers checked against the OpenAPI document the gateway serves (a
helper of the tests, not a test module).

``conftest`` checks every answer a test gets from ``/api`` through a Flask test client with
it (``answers_checked``), so every flow of the suite that calls the API also checks that
the document tells the truth: the status is one the operation lists, the content type is
one it lists for that status, and a JSON body validates against the schema it names
(JSON Schema 2020-12, OpenAPI 3.1's, with ``format`` checked) by an independent validator
(jsonschema-rs), not by the pydantic models the document is generated from.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs

DOCUMENT_PATH = "/api/openapi.json"


class Document:
    """An OpenAPI 3.1 document and what it says one call may answer."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        prefix = document["servers"][0]["url"].rstrip("/")
        # the paths are letters, digits and '/' besides their {parameters}
        self.templates = [(re.compile("^" + prefix + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$"), t) for t in document["paths"]]
        self._validators: dict[str, Any] = {}
        #: (operationId, status) of every answer checked
        self.seen: set[tuple[str, int]] = set()

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """The path template and the operation a call is, if the document has it."""
        for pattern, template in self.templates:
            if pattern.match(path):
                operation = self.document["paths"][template].get(method.lower())
                return (template, operation) if operation is not None else None
        return None

    def validator(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
                    "components": self.document["components"]}
            self._validators[key] = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
        return self._validators[key]

    def problems(self, method: str, path: str, status: int, content_type: str, body: bytes) -> list[str]:
        """What in one answer the document does not describe (nothing for a call it does not
        have: a path no route takes, a method a path does not take)."""
        found = self.operation(method, path)
        if found is None:
            return []
        template, operation = found
        call = f"{method} {template} ({operation['operationId']})"
        self.seen.add((operation["operationId"], status))
        response = operation["responses"].get(str(status))
        if response is None:
            return [f"{call} answered {status}; the document lists {sorted(operation['responses'])}"]
        content = response.get("content", {})
        mime = content_type.split(";")[0].strip()
        if mime not in content:
            return [f"{call} answered {status} as {mime!r}; the document says {sorted(content)}"]
        if mime != "application/json":
            return []
        try:
            data = json.loads(body)
        except ValueError:
            return [f"{call} answered {status} with a body that is not JSON: {body[:100]!r}"]
        return [f"{call} answered {status} with {'/'.join(map(str, error.instance_path)) or 'the body'}: {error.message}"
                for error in self.validator(content[mime]["schema"]).iter_errors(data)]


def served(get: Callable[[str], Any]) -> Document:
    """The document as the app serves it (``get``: a test client's GET)."""
    answer = get(DOCUMENT_PATH)
    assert answer.status_code == 200, answer.data[:200]
    return Document(answer.get_json())


@contextlib.contextmanager
def answers_checked() -> Iterator[list[str]]:
    """While inside, every answer a Flask test client gets from the gateway's ``/api`` is
    checked against the document the same app serves; the problems are collected in the
    list it yields (the caller fails on them)."""
    import flask.testing

    original = flask.testing.FlaskClient.open
    documents: dict[int, Document] = {}
    problems: list[str] = []

    def open_checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = original(self, *args, **kwargs)
        app = self.application
        request = getattr(response, "request", None)
        if "gateway.api" not in app.extensions or request is None or not request.path.startswith("/api/"):
            return response
        if request.path == DOCUMENT_PATH:
            return response
        if id(app) not in documents:
            documents[id(app)] = served(lambda path: original(self, path))
        body = response.get_data() if response.mimetype == "application/json" else b""
        problems.extend(documents[id(app)].problems(request.method, request.path, response.status_code,
                                                    response.content_type or "", body))
        return response

    flask.testing.FlaskClient.open = open_checked  # type: ignore[method-assign]
    try:
        yield problems
    finally:
        flask.testing.FlaskClient.open = original  # type: ignore[method-assign]
