"""Clients of tenant alpha's FHIR API that act with a given SMART authorization.

Requests run in this process through the FHIR URL configuration and views, with the
AuthContext a token would give, on the real test database.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from django.db import connection
from django.test import RequestFactory
from django.urls import resolve

from smart_auth.context import AuthContext
from tenants.models import Tenant

TENANT = "alpha"
FHIR_JSON = "application/fhir+json"


class Response:
    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> dict:
        return orjson.loads(self.content)


class Client:
    def __init__(self, context: AuthContext):
        self.context = context

    def request(
        self,
        method: str,
        path: str,
        params: dict | list | None = None,
        json: object = None,
        content: bytes = b"",
        content_type: str = FHIR_JSON,
    ) -> Response:
        connection.set_tenant(Tenant.objects.get(slug=TENANT))
        query = f"?{urlencode(params)}" if params else ""
        body = orjson.dumps(json) if json is not None else content
        request = RequestFactory().generic(
            method, f"/fhir{path}{query}", data=body, content_type=content_type
        )
        request.auth_context = self.context
        match = resolve(path, urlconf="fhirserver.api.urls")
        response = match.func(request, *match.args, **match.kwargs)
        return Response(response.status_code, response.content)

    def get(self, path: str, params: dict | None = None) -> Response:
        return self.request("GET", path, params)

    def get_url(self, url: str) -> Response:
        """A link the server gave (paging)."""
        parts = urlsplit(url)
        return self.request("GET", parts.path.split("/fhir", 1)[1], parse_qsl(parts.query))

    def post(self, path: str, json: object) -> Response:
        return self.request("POST", path, json=json)

    def put(self, path: str, json: object) -> Response:
        return self.request("PUT", path, json=json)

    def patch(self, path: str, content: bytes, content_type: str) -> Response:
        return self.request("PATCH", path, content=content, content_type=content_type)

    def delete(self, path: str, params: dict | None = None) -> Response:
        return self.request("DELETE", path, params)


def client_for(scopes: str, patient: str | None = None, fhir_user: str | None = None) -> Client:
    return Client(
        AuthContext(
            user="test",
            scopes=frozenset(scopes.split()),
            patient=patient,
            fhir_user=fhir_user,
            tenant=TENANT,
        )
    )
