"""Deny by default: every route of every service demands a role, except health and metrics."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from vigil.service.app import OPEN_PATHS
from vigil.service.auth import DevTokenInProduction, RoleRequirement, TokenStore
from vigil.service.tokens import DEV_ONLY_TOKENS, Role, TokenRecord, save_tokens, token_digest
from vigil.stack.services import SERVICES

pytestmark = pytest.mark.unit


def _role_requirements(route: APIRoute) -> list[RoleRequirement]:
    found: list[RoleRequirement] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RoleRequirement):
            found.append(dep.call)
        stack.extend(dep.dependencies)
    return found


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_every_route_requires_a_role(service: str) -> None:
    app = importlib.import_module(f"vigil.{service}.app").make_app()
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert routes, "a service without routes?"
    unguarded = [r.path for r in routes if r.path not in OPEN_PATHS and not _role_requirements(r)]
    assert unguarded == []
    for route in routes:
        if route.path not in OPEN_PATHS:
            # /v2 is the Open Inference Protocol's own prefix (the deployer's gateway serves it), guarded too.
            allowed = ("/v1/", "/v2") if service == "deployer" else ("/v1/",)
            assert route.path.startswith(allowed), f"{route.path} is outside {allowed}"


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_openapi_documents_every_route(service: str) -> None:
    app = importlib.import_module(f"vigil.{service}.app").make_app()
    spec = app.openapi()
    documented = set(spec["paths"])
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            assert route.path in documented
            for method in route.methods:
                assert spec["paths"][route.path][method.lower()].get("description") or spec["paths"][route.path][
                    method.lower()
                ].get("summary")


def test_production_refuses_a_published_dev_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    record = TokenRecord(token_digest(next(iter(DEV_ONLY_TOKENS))), "admin", frozenset({Role.ADMIN}))
    save_tokens(path, [record])
    assert TokenStore(path).lookup(next(iter(DEV_ONLY_TOKENS))) is not None  # development: accepted
    with pytest.raises(DevTokenInProduction):
        TokenStore(path, refuse_dev_tokens=True).check()
