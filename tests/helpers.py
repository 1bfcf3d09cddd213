"""Requests many tests make, named once: consume, grant, change a limit, read the quota and the log.

The verb (consume, grant) returns the response, for a test about a refusal; the past
participle (consumed, granted) asserts the call succeeded and returns its JSON answer.
Every request goes through conftest's Api, so on client "acme" with the role's key unless told.
"""

from prometheus_client.parser import text_string_to_metric_families


def succeeded(response, status=200):
    """The JSON answer of a response that has this status (the body is shown when it has not)."""
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def consume(api, count=1, client_id="acme", idempotency_key=None):
    """POST /api/clients/<id>/usage with the service key."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return api.post(f"/api/clients/{client_id}/usage", json={"count": count}, key="service", headers=headers)


def consumed(api, count=1, client_id="acme", **kwargs):
    return succeeded(consume(api, count, client_id, **kwargs))


def grant(api, amount, scope=None, reason=None, client_id="acme", key="write", headers=None):
    """POST /api/admin/clients/<id>/credits {"action": "grant"}: scope and reason only when given."""
    body = {"action": "grant", "amount": amount}
    if scope is not None:
        body["scope"] = scope
    if reason is not None:
        body["reason"] = reason
    return api.post(f"/api/admin/clients/{client_id}/credits", json=body, key=key, headers=headers)


def granted(api, amount, scope=None, reason=None, client_id="acme", **kwargs):
    return succeeded(grant(api, amount, scope, reason, client_id, **kwargs))


def set_limit(api, limit, client_id="acme"):
    """PUT the client's monthly generation limit (each one writes a limit_change entry)."""
    return succeeded(api.put(f"/api/admin/clients/{client_id}/quota", json={"monthlyGenerationLimit": limit}))


def quota(api, client_id="acme"):
    """GET /api/admin/clients/<id>/quota: {"quota", "usage", "auditLog"}."""
    return succeeded(api.get(f"/api/admin/clients/{client_id}/quota", key="read"))


def quota_status(api, client_id="acme", key="service"):
    """GET /api/clients/<id>/quota-status, the platform's read."""
    return succeeded(api.get(f"/api/clients/{client_id}/quota-status", key=key))


def audit_log(api, client_id="acme", query=""):
    """The client's audit entries on one page, newest first (query: "?action=...", "?limit=...")."""
    return succeeded(api.get(f"/api/admin/clients/{client_id}/audit-log{query}", key="read"))["items"]


def assert_cli_refusal(result, exit_code, message):
    """A command that refused, not one that crashed: its exit code, its message, no traceback."""
    assert isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert result.exit_code == exit_code, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output


def hold(api, count=1, client_id="acme", ttl_seconds=None, reference=None, headers=None):
    """POST /api/clients/<id>/holds with the service key; ttlSeconds and reference only when given."""
    body = {"count": count}
    if ttl_seconds is not None:
        body["ttlSeconds"] = ttl_seconds
    if reference is not None:
        body["reference"] = reference
    return api.post(f"/api/clients/{client_id}/holds", json=body, key="service", headers=headers)


def held(api, count=1, client_id="acme", **kwargs):
    """A hold placed (201): its answer."""
    return succeeded(hold(api, count, client_id, **kwargs), 201)


def resolve(api, hold_id, action, count=None, client_id="acme", headers=None):
    """POST .../holds/<id>/capture (with count when given) or .../release."""
    body = {"count": count} if count is not None else {}
    return api.post(f"/api/clients/{client_id}/holds/{hold_id}/{action}", json=body, key="service", headers=headers)


def refund(api, count, month=None, client_id="acme", idempotency_key="refund-1", reason=None):
    """POST /api/clients/<id>/usage/refunds with the service key (and an Idempotency-Key unless None)."""
    body = {"count": count}
    if month is not None:
        body["month"] = month
    if reason is not None:
        body["reason"] = reason
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return api.post(f"/api/clients/{client_id}/usage/refunds", json=body, key="service", headers=headers)


def usage_months(api, client_id="acme", query=""):
    """The usage history's months (GET /api/admin/clients/<id>/usage)."""
    return succeeded(api.get(f"/api/admin/clients/{client_id}/usage{query}", key="read"))["items"]


def scrape(client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
