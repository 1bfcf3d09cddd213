"""The Idempotency-Key header on POST .../credits and POST .../usage."""

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import bindparam, text

from conftest import assert_error, config_for, make_key
from credits_service.extensions import db
from credits_service.metrics import REGISTRY
from credits_service.models import UTCDateTime
from credits_service.services.idempotency import fingerprint
from helpers import audit_log, consume, consumed, granted, quota

NOW = "2026-11-15T12:00:00+00:00"
REPLAYED = "Idempotent-Replayed"
CREDITS = "/api/admin/clients/acme/credits"
USAGE = "/api/clients/acme/usage"
GRANT_5 = {"action": "grant", "amount": 5}
KEY = "k-1"


@pytest.fixture(autouse=True)
def frozen(clock):
    clock.set(NOW)


def later(clock, **delta):
    clock.set((datetime.fromisoformat(NOW) + timedelta(**delta)).isoformat())


def post_credits(api, body=GRANT_5, key="write", idempotency_key=KEY, path=CREDITS):
    """POST a credits action (a 5-credit grant unless told) carrying an Idempotency-Key."""
    return api.post(path, json=body, key=key, headers={"Idempotency-Key": idempotency_key})


def limit_of(api, client_id="acme"):
    return quota(api, client_id)["quota"]["monthlyGenerationLimit"]


def used_of(api, client_id="acme"):
    return quota(api, client_id)["usage"]["generationCount"]


def sql(app, statement, **params):
    with app.app_context():
        session = db.session()
        result = session.execute(statement, params)
        rows = result.all() if result.returns_rows else None
        session.commit()
        return rows


def stored_keys(app):
    return sql(app, text('SELECT principal, "key" FROM idempotency_keys ORDER BY "key"'))


def assert_first(response, status=200):
    assert response.status_code == status, response.get_json()
    assert REPLAYED not in response.headers


def assert_replayed(response, first):
    assert response.status_code == first.status_code
    assert response.get_json() == first.get_json()
    assert response.headers[REPLAYED] == "true"


# ---- replays -------------------------------------------------------------------


def test_a_repeated_grant_is_replayed_and_grants_once(api):
    api.create_client()
    first = post_credits(api)
    assert_first(first)
    assert first.get_json() == {"action": "grant", "grantId": first.get_json()["grantId"], "scope": "permanent",
                                "month": None, "expiresAt": None, "currentUsage": 0, "previousLimit": 100,
                                "newLimit": 105, "remaining": 105}
    for _ in range(2):
        assert_replayed(post_credits(api), first)
    assert limit_of(api) == 105
    entries = audit_log(api)
    assert [(entry["action"], entry["previousValue"], entry["newValue"]) for entry in entries] == [
        ("credit_grant", "100", "105")
    ]


def test_a_repeated_reset_is_replayed_and_resets_once(api):
    api.create_client()
    consumed(api, 30)
    first = post_credits(api, body={"action": "reset"})
    assert_first(first)
    assert first.get_json() == {"action": "reset", "previousUsage": 30, "currentUsage": 0, "limit": 100,
                                "remaining": 100}
    consumed(api, 7)
    assert_replayed(post_credits(api, body={"action": "reset"}), first)
    assert used_of(api) == 7
    assert [entry["action"] for entry in audit_log(api)] == ["usage_reset"]


def test_a_repeated_consumption_is_replayed_and_counted_once(api):
    api.create_client()
    first = consume(api, 3, idempotency_key=KEY)
    assert_first(first)
    assert first.get_json() == {"month": "2026-11", "generationCount": 3, "limit": 100, "remaining": 97}
    for _ in range(2):
        assert_replayed(consume(api, 3, idempotency_key=KEY), first)
    assert used_of(api) == 3
    assert consume(api, 3, idempotency_key="k-2").get_json()["generationCount"] == 6


def test_requests_without_the_header_are_not_deduplicated(api):
    api.create_client()
    for _ in range(2):
        response = api.post(CREDITS, json=GRANT_5)
        assert_first(response)
    assert limit_of(api) == 110
    assert len(audit_log(api)) == 2


def test_a_refusal_is_replayed(api):
    api.create_client(plan="enterprise")
    first = post_credits(api)
    assert_first(first, 409)
    assert_error(first, 409)
    assert_replayed(post_credits(api), first)
    assert limit_of(api) == -1
    assert audit_log(api) == []


def test_a_402_is_replayed_even_after_credits_were_granted(api):
    api.create_client()
    first = consume(api, 101, idempotency_key=KEY)
    assert_first(first, 402)
    assert first.get_json()["generationCount"] == 0
    granted(api, 50)
    assert_replayed(consume(api, 101, idempotency_key=KEY), first)
    assert used_of(api) == 0
    # A new key runs the request against today's limit.
    assert_first(consume(api, 101, idempotency_key="k-2"))
    assert used_of(api) == 101


# ---- the same key for another request ------------------------------------------


def test_the_same_key_with_another_body_is_422(api):
    api.create_client()
    assert_first(post_credits(api))
    for body in ({"action": "grant", "amount": 6}, {"action": "grant", "amount": 5, "reason": "again"},
                 {"action": "reset"}):
        response = post_credits(api, body=body)
        assert_error(response, 422)
        assert REPLAYED not in response.headers
    assert limit_of(api) == 105
    assert len(audit_log(api)) == 1


def test_the_same_key_with_another_count_is_422(api):
    api.create_client()
    assert_first(consume(api, 3, idempotency_key=KEY))
    assert_error(consume(api, 4, idempotency_key=KEY), 422)
    assert used_of(api) == 3


def test_the_same_key_on_another_path_is_422(api):
    api.create_client()
    api.create_client("beta", "Beta Inc")
    assert_first(post_credits(api))
    assert_error(post_credits(api, path="/api/admin/clients/beta/credits"), 422)
    assert limit_of(api, "beta") == 100
    assert audit_log(api, "beta") == []
    assert limit_of(api) == 105


def test_keys_belong_to_their_principal(api, app):
    api.create_client()
    bob = make_key(app, "bob@example.com", "write")
    first = post_credits(api)
    assert_first(first)
    second = post_credits(api, key=bob)
    assert_first(second)
    assert second.get_json()["newLimit"] == 110
    assert limit_of(api) == 110
    assert [entry["adminId"] for entry in audit_log(api)] == ["bob@example.com", "alice@example.com"]
    assert_replayed(post_credits(api, key=bob), second)
    assert_replayed(post_credits(api), first)


# ---- what does not consume a key -----------------------------------------------


def test_a_validation_error_does_not_consume_the_key(api):
    api.create_client()
    refused = post_credits(api, body={"action": "grant"})
    assert_error(refused, 400)
    assert "amount" in refused.get_json()["fields"]
    assert REPLAYED not in refused.headers
    assert_first(post_credits(api))
    assert limit_of(api) == 105


def test_a_validation_error_on_usage_does_not_consume_the_key(api):
    api.create_client()
    assert_error(consume(api, 0, idempotency_key=KEY), 400)
    assert_first(consume(api, 2, idempotency_key=KEY))
    assert used_of(api) == 2


# ---- the header itself ---------------------------------------------------------


@pytest.mark.parametrize("value", ["", "k" * 256], ids=["empty", "256 chars"])
def test_an_invalid_header_is_400(api, value):
    api.create_client()
    assert_error(post_credits(api, idempotency_key=value), 400)
    assert_error(consume(api, 1, idempotency_key=value), 400)
    assert limit_of(api) == 100
    assert used_of(api) == 0


def test_a_255_char_key_is_accepted(api):
    api.create_client()
    key = "k" * 255
    first = post_credits(api, idempotency_key=key)
    assert_first(first)
    assert_replayed(post_credits(api, idempotency_key=key), first)
    assert limit_of(api) == 105


# ---- in flight -----------------------------------------------------------------


def insert_claim(app, clock, path=CREDITS, payload=GRANT_5, principal="alice@example.com", key=KEY):
    """A claim as a request still running holds it: no stored answer yet."""
    now = clock()
    sql(
        app,
        text(
            'INSERT INTO idempotency_keys (principal, "key", fingerprint, status_code, response_body, '
            "created_at, locked_at) VALUES (:principal, :key, :fingerprint, NULL, NULL, :created_at, :locked_at)"
        ).bindparams(bindparam("created_at", type_=UTCDateTime()), bindparam("locked_at", type_=UTCDateTime())),
        principal=principal, key=key, fingerprint=fingerprint("POST", path, payload),
        created_at=now, locked_at=now,
    )


def test_a_key_in_flight_is_409_until_its_lock_times_out(api, app, clock):
    api.create_client()
    insert_claim(app, clock)
    response = post_credits(api)
    body = assert_error(response, 409)
    assert "still being processed" in body["error"]
    assert REPLAYED not in response.headers
    later(clock, seconds=59)
    assert_error(post_credits(api), 409)
    assert limit_of(api) == 100
    assert audit_log(api) == []
    later(clock, seconds=61)
    first = post_credits(api)
    assert_first(first)
    assert first.get_json()["newLimit"] == 105
    assert_replayed(post_credits(api), first)
    assert limit_of(api) == 105
    assert len(audit_log(api)) == 1


def test_a_consumption_in_flight_is_409_until_its_lock_times_out(api, app, clock):
    api.create_client()
    insert_claim(app, clock, path=USAGE, payload={"count": 4}, principal="platform")
    assert_error(consume(api, 4, idempotency_key=KEY), 409)
    assert used_of(api) == 0
    later(clock, seconds=61)
    first = consume(api, 4, idempotency_key=KEY)
    assert_first(first)
    assert_replayed(consume(api, 4, idempotency_key=KEY), first)
    assert used_of(api) == 4


def test_a_finished_request_made_unfinished_again_is_409(api, app, clock):
    api.create_client()
    assert_first(post_credits(api))
    sql(
        app,
        text('UPDATE idempotency_keys SET status_code = NULL, response_body = NULL, locked_at = :now '
             'WHERE "key" = :key').bindparams(bindparam("now", type_=UTCDateTime())),
        now=clock(), key=KEY,
    )
    assert "still being processed" in assert_error(post_credits(api), 409)["error"]
    assert limit_of(api) == 105


def test_a_different_body_while_in_flight_is_422(api, app, clock):
    api.create_client()
    insert_claim(app, clock)
    assert_error(post_credits(api, body={"action": "grant", "amount": 6}), 422)
    assert limit_of(api) == 100


# ---- retention -----------------------------------------------------------------


def test_a_stored_answer_is_replayed_within_the_retention(api, clock):
    api.create_client()
    first = post_credits(api)
    later(clock, hours=23)
    assert_replayed(post_credits(api), first)
    assert limit_of(api) == 105


def test_a_stored_answer_expires_after_the_retention(api, clock):
    api.create_client()
    assert_first(post_credits(api))
    later(clock, hours=25)
    again = post_credits(api)
    assert_first(again)
    assert again.get_json()["previousLimit"] == 105
    assert again.get_json()["newLimit"] == 110
    assert limit_of(api) == 110
    assert len(audit_log(api)) == 2


def test_purge_deletes_keys_older_than_the_retention(api, app, clock, runner):
    api.create_client()
    assert_first(post_credits(api, idempotency_key="old"))
    assert_first(consume(api, 1, idempotency_key="old-usage"))
    later(clock, hours=20)
    assert_first(post_credits(api, idempotency_key="recent"))
    later(clock, hours=25)
    assert len(stored_keys(app)) == 3

    result = runner.invoke(args=["idempotency", "purge"])
    assert result.exit_code == 0, result.output
    assert re.findall(r"\d+", result.output) == ["2"]
    assert stored_keys(app) == [("alice@example.com", "recent")]

    result = runner.invoke(args=["idempotency", "purge"])
    assert result.exit_code == 0, result.output
    assert re.findall(r"\d+", result.output) == ["0"]
    assert stored_keys(app) == [("alice@example.com", "recent")]


class TestPurgeInBatches:
    @pytest.fixture
    def app_config(self, database_url, clock):
        return config_for(database_url, CLOCK=clock, IDEMPOTENCY_PURGE_BATCH=2)

    def test_purge_deletes_every_expired_answer_two_rows_per_transaction(self, api, app, clock, runner):
        api.create_client()
        for i in range(5):
            assert_first(consume(api, 1, idempotency_key=f"old-{i}"))
        later(clock, hours=25)
        assert_first(consume(api, 1, idempotency_key="recent"))
        purged = REGISTRY.get_sample_value("credits_idempotency_answers_purged_total") or 0

        result = runner.invoke(args=["idempotency", "purge"])
        assert result.exit_code == 0, result.output
        assert re.findall(r"\d+", result.output) == ["5"]
        assert stored_keys(app) == [("platform", "recent")]
        assert REGISTRY.get_sample_value("credits_idempotency_answers_purged_total") == purged + 5
