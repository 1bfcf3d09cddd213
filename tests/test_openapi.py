"""/openapi.json is a valid OpenAPI 3 document that describes every route as it behaves; /docs works offline."""

import re

import pytest
from openapi_spec_validator import validate

ROLES = {
    ("post", "/api/admin/clients"): ["write"],
    ("get", "/api/admin/clients"): ["read"],
    ("get", "/api/admin/clients/{client_id}"): ["read"],
    ("delete", "/api/admin/clients/{client_id}"): ["write"],
    ("get", "/api/admin/clients/{client_id}/quota"): ["read"],
    ("put", "/api/admin/clients/{client_id}/quota"): ["write"],
    ("post", "/api/admin/clients/{client_id}/credits"): ["write"],
    ("get", "/api/admin/clients/{client_id}/audit-log"): ["read"],
    ("get", "/api/admin/clients/{client_id}/grants"): ["read"],
    ("get", "/api/admin/clients/{client_id}/usage"): ["read"],
    ("post", "/api/clients/{client_id}/usage"): ["service"],
    ("get", "/api/clients/{client_id}/quota-status"): ["service", "read"],
}
EVERY_ROUTE = {"401", "403", "429", "503"}
JSON_BODY = {"400", "413", "415"}
STATUSES = {
    ("post", "/api/admin/clients"): {"201", "409"} | JSON_BODY,
    ("get", "/api/admin/clients"): {"200", "400"},
    ("get", "/api/admin/clients/{client_id}"): {"200", "404"},
    ("delete", "/api/admin/clients/{client_id}"): {"204", "404"},
    ("get", "/api/admin/clients/{client_id}/quota"): {"200", "404"},
    ("put", "/api/admin/clients/{client_id}/quota"): {"200", "404"} | JSON_BODY,
    ("post", "/api/admin/clients/{client_id}/credits"): {"200", "404", "409", "422"} | JSON_BODY,
    ("get", "/api/admin/clients/{client_id}/audit-log"): {"200", "400", "404"},
    ("get", "/api/admin/clients/{client_id}/grants"): {"200", "400", "404"},
    ("get", "/api/admin/clients/{client_id}/usage"): {"200", "400", "404"},
    ("post", "/api/clients/{client_id}/usage"): {"200", "402", "404", "409", "422"} | JSON_BODY,
    ("get", "/api/clients/{client_id}/quota-status"): {"200", "404"},
}


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_the_document_is_valid_openapi_3(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_every_api_route_is_documented(app, spec):
    served = {
        (method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(method, path) for path, item in spec["paths"].items() for method in item if method != "parameters"}
    operations = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
    assert served | operations == documented == set(ROLES) | operations


@pytest.mark.parametrize("method,path", sorted(ROLES))
def test_each_operation_states_its_role_and_every_status(spec, method, path):
    operation = spec["paths"][path][method]
    assert operation["security"] == [{"bearerAuth": []}]
    assert operation["x-required-roles"] == ROLES[(method, path)]
    assert "Requires a key with role" in operation["description"]
    assert set(operation["responses"]) - {"default"} == STATUSES[(method, path)] | EVERY_ROUTE


def test_error_responses_use_the_error_schema(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for name in ("BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "TOO_MANY_REQUESTS"):
        schema = spec["components"]["responses"][name]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    usage_402 = spec["paths"]["/api/clients/{client_id}/usage"]["post"]["responses"]["402"]
    assert usage_402["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/QuotaExceeded"}


def test_request_bodies_come_from_the_validating_schemas(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["CreditAction"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/GrantCredits"},
            {"$ref": "#/components/schemas/VoidGrant"},
            {"$ref": "#/components/schemas/ResetUsage"},
        ]
    }
    grant = schemas["GrantCredits"]
    assert grant["required"] == ["action", "amount"]
    assert grant["properties"]["amount"] == {"type": "integer", "minimum": 1, "maximum": 1000000000}
    assert grant["additionalProperties"] is False
    assert grant["properties"]["scope"]["enum"] == ["permanent", "month"]
    void = schemas["VoidGrant"]
    assert void["required"] == ["action", "grantId"]
    assert void["properties"]["grantId"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    assert void["additionalProperties"] is False
    audit_filter = spec["paths"]["/api/admin/clients/{client_id}/audit-log"]["get"]["parameters"]
    assert "credit_void" in next(p for p in audit_filter if p["name"] == "action")["schema"]["enum"]
    history = spec["paths"]["/api/admin/clients/{client_id}/usage"]["get"]["parameters"]
    assert {p["name"]: p["schema"]["pattern"] for p in history if p["in"] == "query"} == {
        "from": "^[1-9][0-9]{3}-(0[1-9]|1[0-2])$", "to": "^[1-9][0-9]{3}-(0[1-9]|1[0-2])$",
    }
    assert schemas["QuotaUpdate"]["anyOf"] == [
        {"required": ["plan"]}, {"required": ["monthlyGenerationLimit"]}, {"required": ["storageQuotaMb"]}
    ]
    assert schemas["ClientCreate"]["properties"]["id"]["pattern"] == "^[A-Za-z0-9._-]{1,64}$"
    usage = spec["paths"]["/api/clients/{client_id}/usage"]["post"]
    assert usage["requestBody"]["required"] is False  # {count} defaults to 1
    idempotency = [p for p in usage["parameters"] if p["name"] == "Idempotency-Key"]
    assert idempotency and idempotency[0]["in"] == "header"


def test_swagger_ui_is_served_from_the_package_without_internet(client):
    page = client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html
    assert '"validatorUrl": null' in html  # no call to the public validator
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(asset.startswith("/docs/") for asset in assets), assets
    for asset in assets:
        with client.get(asset) as response:
            assert response.status_code == 200, asset
