"""Deletes expired Idempotency-Key answers while the service runs, so the table stays bounded.

Each worker process runs one daemon thread, started by its first request (so never in the
gunicorn master, a `flask` command or the tests), that purges every
IDEMPOTENCY_PURGE_INTERVAL_SECONDS in batches. On PostgreSQL an advisory lock lets one
worker of one instance purge at a time (see IdempotencyKeys.purge); the rest skip that round.
"""

import logging
import threading
import time

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from . import services

log = logging.getLogger("credits_service.purge")


def init_app(app: Flask) -> None:
    interval = app.config["IDEMPOTENCY_PURGE_INTERVAL_SECONDS"]
    if interval <= 0 or app.testing:
        return
    starting = threading.Lock()
    started = False

    @app.before_request
    def _start_purging():
        nonlocal started
        if started:
            return
        with starting:
            if not started:
                threading.Thread(target=_purge_forever, args=(app, interval), name="idempotency-purge",
                                 daemon=True).start()
                started = True


def _purge_forever(app: Flask, interval: int) -> None:
    while True:
        time.sleep(interval)
        with app.app_context():
            try:
                purged = services.idempotency_keys().purge(app.config["IDEMPOTENCY_PURGE_BATCH"])
            except SQLAlchemyError as error:  # the database is down: try again next round
                log.warning("purging Idempotency-Key answers failed: %s", type(error).__name__)
                continue
        if purged:
            log.info("purged %d expired Idempotency-Key answers", purged, extra={"event": "idempotency_purge",
                                                                             "purged": purged})
