"""The bounds mode: what a quota-status request would cost with parts of the stack taken away.

The evidence for the decision the 0.7x target waits for (README, "Sixth round"). Each variant is
counted as bench/instructions.py counts an app (valgrind, in-process, the same requests):

  ceiling        bench/ceiling.py
  floor          bench/floor.py: the required libraries, nothing of the service's own
  floor-plain    the floor, answering with the schema's keys through jsonify instead of
                 flask-smorest's response (marshmallow's dump)
  service        the service
  service-plain  the service, quota-status answered the same way (the same guard and service call)
  service-bare   service-plain without any before/after request hook: no request id, metrics or
                 access log

None of the variants is a way to run the service: each drops something the project requires.
Prints a table and writes bench/results/bounds-<LABEL>.json.
"""

import inspect
import json
import os
from datetime import UTC, datetime

from flask import jsonify

from credits_service.months import iso_utc
from credits_service.schemas import QuotaStatusSchema, UTCDateTime
from credits_service.services.credits import QuotaStatus

SIDES = ("ceiling", "floor", "floor-plain", "service", "service-plain", "service-bare")


def plain_answer(schema):
    """value -> the dict schema.dump(value) gives, built without marshmallow; checked against it once."""
    keys = [(name, field.data_key or name, isinstance(field, UTCDateTime)) for name, field in schema.fields.items()]

    def answer(value) -> dict:
        get = value.get if isinstance(value, dict) else value.__getattribute__
        return {key: iso_utc(get(name)) if instant else get(name) for name, key, instant in keys}

    sample = QuotaStatus("free", "2026-11", 7, 100, 93, 90, 10, 7.0, False, False, False,
                         datetime(2026, 12, 1, tzinfo=UTC))
    if answer(sample) != schema.dump(sample):
        raise AssertionError("the plain answer is not the schema's")
    return answer


def _floor_plain():
    from bench import floor

    answer = plain_answer(QuotaStatusSchema())
    status = inspect.unwrap(floor.quota_status)  # the view under the guard and flask-smorest's wrappers

    @floor._guard
    def quota_status(client_id):
        return jsonify(answer(status(client_id)))

    floor.app.view_functions["platform.quota_status"] = quota_status
    return floor.app


def _service_plain(hooks: bool):
    from credits_service import create_app
    from credits_service.api import credits_service
    from credits_service.auth import status_read

    app = create_app()
    answer = plain_answer(QuotaStatusSchema())

    @status_read
    def quota_status(client_id):
        return jsonify(answer(credits_service().quota_status(client_id)))

    app.view_functions["usage.quota_status"] = quota_status
    if not hooks:
        app.before_request_funcs.clear()
        app.after_request_funcs.clear()
    return app


def __getattr__(name: str):
    """The variants by name, each built on first use (a counting child builds only its own)."""
    builders = {"floor_plain": _floor_plain, "service_plain": lambda: _service_plain(hooks=True),
                "service_bare": lambda: _service_plain(hooks=False)}
    if name not in builders:
        raise AttributeError(name)
    return builders[name]()


def main() -> None:
    from endpoints import ENDPOINTS
    from harness import RESULTS
    from instructions import COUNT, WARM, count, counting_setup

    label = os.environ.get("LABEL", "latest")
    name, method, path, role, body = next(endpoint for endpoint in ENDPOINTS if endpoint[0] == "GET quota-status")
    print(f"{name}: instructions per request, {COUNT} counted after {WARM} (valgrind callgrind, in-process)")
    counted = {}
    with counting_setup() as (keys, env, workdir):
        for side in SIDES:
            counted[side] = count(side, method, path, keys[role], body, env, workdir)
            print(f"{side:<14} {counted[side]:>11,} {counted[side] / counted['ceiling']:>6.2f}x the ceiling", flush=True)
    report = {"label": label, "when": datetime.now(UTC).isoformat(timespec="seconds"), "endpoint": name,
              "settings": {"counted": COUNT, "warm": WARM}, "instructions": counted}
    out = RESULTS / f"bounds-{label}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
