"""/openapi.json is a valid OpenAPI 3 document that describes every route as it behaves; /docs works offline."""

import json
import re
import subprocess
import sys
from pathlib import Path

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
    ("get", "/api/admin/audit-log"): ["read"],
    ("get", "/api/admin/audit-log/export"): ["read"],
    ("post", "/api/clients/{client_id}/usage"): ["service"],
    ("get", "/api/clients/{client_id}/quota-status"): ["service", "read"],
    ("post", "/api/clients/{client_id}/holds"): ["service"],
    ("get", "/api/clients/{client_id}/holds"): ["service", "read"],
    ("get", "/api/clients/{client_id}/holds/{hold_id}"): ["service", "read"],
    ("post", "/api/clients/{client_id}/holds/{hold_id}/capture"): ["service"],
    ("post", "/api/clients/{client_id}/holds/{hold_id}/release"): ["service"],
    ("post", "/api/clients/{client_id}/usage/refunds"): ["service"],
    ("get", "/api/admin/clients/{client_id}/refunds"): ["read"],
    ("post", "/api/clients/{client_id}/storage"): ["service"],
    ("put", "/api/admin/clients/{client_id}/storage"): ["write"],
    ("post", "/api/admin/webhooks"): ["write"],
    ("get", "/api/admin/webhooks"): ["read"],
    ("get", "/api/admin/webhooks/{endpoint_id}"): ["read"],
    ("patch", "/api/admin/webhooks/{endpoint_id}"): ["write"],
    ("delete", "/api/admin/webhooks/{endpoint_id}"): ["write"],
    ("post", "/api/admin/webhooks/{endpoint_id}/rotate-secret"): ["write"],
    ("post", "/api/admin/webhooks/{endpoint_id}/ping"): ["write"],
    ("get", "/api/admin/webhooks/{endpoint_id}/deliveries"): ["read"],
    ("post", "/api/admin/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry"): ["write"],
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
    ("get", "/api/admin/audit-log"): {"200", "400"},
    ("get", "/api/admin/audit-log/export"): {"200", "400"},
    ("post", "/api/clients/{client_id}/usage"): {"200", "402", "404", "409", "422"} | JSON_BODY,
    ("get", "/api/clients/{client_id}/quota-status"): {"200", "404"},
    ("post", "/api/clients/{client_id}/holds"): {"201", "402", "404", "409", "422"} | JSON_BODY,
    ("get", "/api/clients/{client_id}/holds"): {"200", "400", "404"},
    ("get", "/api/clients/{client_id}/holds/{hold_id}"): {"200", "404"},
    ("post", "/api/clients/{client_id}/holds/{hold_id}/capture"): {"200", "404", "409", "422"} | JSON_BODY,
    ("post", "/api/clients/{client_id}/holds/{hold_id}/release"): {"200", "404", "409", "422"} | JSON_BODY,
    ("post", "/api/clients/{client_id}/usage/refunds"): {"200", "404", "409", "422"} | JSON_BODY,
    ("get", "/api/admin/clients/{client_id}/refunds"): {"200", "400", "404"},
    ("post", "/api/clients/{client_id}/storage"): {"200", "402", "404", "409", "422"} | JSON_BODY,
    ("put", "/api/admin/clients/{client_id}/storage"): {"200", "404"} | JSON_BODY,
    ("post", "/api/admin/webhooks"): {"201"} | JSON_BODY,
    ("get", "/api/admin/webhooks"): {"200", "400"},
    ("get", "/api/admin/webhooks/{endpoint_id}"): {"200", "404"},
    ("patch", "/api/admin/webhooks/{endpoint_id}"): {"200", "404"} | JSON_BODY,
    ("delete", "/api/admin/webhooks/{endpoint_id}"): {"204", "404"},
    ("post", "/api/admin/webhooks/{endpoint_id}/rotate-secret"): {"200", "404"},
    ("post", "/api/admin/webhooks/{endpoint_id}/ping"): {"202", "404", "409"},
    ("get", "/api/admin/webhooks/{endpoint_id}/deliveries"): {"200", "400", "404"},
    ("post", "/api/admin/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry"): {"202", "404", "409"},
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
        (method.lower(), re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule))
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
    quota_update = schemas["QuotaUpdate"]
    assert quota_update["description"] == "Give at least one of plan, monthlyGenerationLimit, storageQuotaMb."
    assert [(variant["title"], variant["required"]) for variant in quota_update["anyOf"]] == [
        ("QuotaUpdateWithPlan", ["plan"]),
        ("QuotaUpdateWithMonthlyGenerationLimit", ["monthlyGenerationLimit"]),
        ("QuotaUpdateWithStorageQuotaMb", ["storageQuotaMb"]),
    ]
    for variant in quota_update["anyOf"]:
        assert set(variant["properties"]) == {"plan", "monthlyGenerationLimit", "storageQuotaMb", "reason"}
        assert variant["additionalProperties"] is False
    assert schemas["ClientCreate"]["properties"]["id"]["pattern"] == "^[A-Za-z0-9._-]{1,64}$"
    usage = spec["paths"]["/api/clients/{client_id}/usage"]["post"]
    assert usage["requestBody"]["required"] is False  # {count} defaults to 1
    idempotency = [p for p in usage["parameters"] if p["name"] == "Idempotency-Key"]
    assert idempotency and idempotency[0]["in"] == "header"


def test_the_audit_search_documents_its_parameters_and_export(spec):
    search = spec["paths"]["/api/admin/audit-log"]["get"]
    parameters = {p["name"]: p for p in search["parameters"]}
    assert set(parameters) == {"clientId", "adminId", "action", "since", "until", "limit", "before"}
    assert parameters["action"]["schema"]["type"] == "array"
    assert (parameters["action"]["style"], parameters["action"]["explode"]) == ("form", True)
    assert "repeat" in parameters["action"]["description"]
    assert parameters["since"]["schema"] == {"type": "string", "format": "date-time"}
    assert parameters["before"]["schema"]["minimum"] == 1
    page = spec["components"]["schemas"]["AuditSearchPage"]["properties"]
    assert set(page) == {"items", "limit", "nextBefore"} and page["nextBefore"]["nullable"] is True
    export = spec["paths"]["/api/admin/audit-log/export"]["get"]
    assert set(export["responses"]["200"]["content"]) == {"text/csv", "application/x-ndjson"}
    formats = {p["name"]: p for p in export["parameters"]}["format"]["schema"]
    assert formats["enum"] == ["csv", "ndjson"]
    per_client = spec["paths"]["/api/admin/clients/{client_id}/audit-log"]["get"]
    assert {"offset", "before"} <= {p["name"] for p in per_client["parameters"]}
    assert "nextBefore" in spec["components"]["schemas"]["AuditLogPage"]["properties"]


def test_the_generated_python_client_types_every_request_body(spec, tmp_path):
    """openapi-python-client, as the Python services run it, gives no request body the type Any."""
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "config.yaml").write_text("post_hooks: []\n")  # no formatter to run
    result = subprocess.run(
        [str(Path(sys.executable).parent / "openapi-python-client"), "generate", "--path", "spec.json",
         "--output-path", "client", "--meta", "none", "--config", "config.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bodies = {
        module.stem: set(re.findall(r"^\s+body: (.+?)(?: = UNSET)?,$", module.read_text(), re.MULTILINE))
        for module in (tmp_path / "client" / "api").rglob("*.py")
    }
    bodies = {name: types for name, types in bodies.items() if types}
    assert set(bodies) == {
        "post_api_admin_clients", "put_api_admin_clients_client_id_quota",
        "post_api_admin_clients_client_id_credits", "post_api_clients_client_id_usage",
        "post_api_clients_client_id_holds", "post_api_clients_client_id_holds_hold_id_capture",
        "post_api_clients_client_id_holds_hold_id_release", "post_api_clients_client_id_usage_refunds",
        "post_api_clients_client_id_storage", "put_api_admin_clients_client_id_storage",
        "post_api_admin_webhooks", "patch_api_admin_webhooks_endpoint_id",
    }
    untyped = {name: types for name, types in bodies.items() if any(re.search(r"\bAny\b", t) for t in types)}
    assert untyped == {}
    assert bodies["put_api_admin_clients_client_id_quota"] == {
        "QuotaUpdateWithMonthlyGenerationLimit | QuotaUpdateWithPlan | QuotaUpdateWithStorageQuotaMb"
    }


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
