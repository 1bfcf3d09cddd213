"""Upkeep while the service runs: expired Idempotency-Key answers purged, lapsed holds marked,
ended webhook deliveries purged.

Each worker process runs one daemon thread per job, started by its first request (so never in
the gunicorn master, a `flask` command or the tests), that runs the job every interval, in
bounded batches. On PostgreSQL an advisory lock lets one worker of one instance run a job at a
time (see the jobs themselves); the rest skip that round. A job's interval of 0 turns it off;
its `flask` command still runs it by hand.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from . import services

log = logging.getLogger("credits_service.background")


@dataclass(frozen=True)
class Job:
    name: str
    interval_setting: str
    run: Callable[[dict], int]  # given the app's config, does one round; returns how many rows it handled


JOBS = (
    Job("idempotency_purge", "IDEMPOTENCY_PURGE_INTERVAL_SECONDS",
        lambda config: services.idempotency_keys().purge(config["IDEMPOTENCY_PURGE_BATCH"])),
    Job("hold_sweep", "HOLD_SWEEP_INTERVAL_SECONDS",
        lambda config: services.holds().sweep(config["HOLD_SWEEP_BATCH"])),
    Job("webhook_purge", "WEBHOOK_PURGE_INTERVAL_SECONDS",
        lambda config: services.webhooks().purge(timedelta(hours=config["WEBHOOK_RETENTION_HOURS"]))),
)


def init_app(app: Flask) -> None:
    jobs = [job for job in JOBS if app.config[job.interval_setting] > 0]
    if not jobs or app.testing:
        return
    starting = threading.Lock()
    started = False

    @app.before_request
    def _start_jobs():
        nonlocal started
        if started:
            return
        with starting:
            if not started:
                for job in jobs:
                    threading.Thread(target=_run_forever, args=(app, job), name=job.name, daemon=True).start()
                started = True


def _run_forever(app: Flask, job: Job) -> None:
    interval = app.config[job.interval_setting]
    while True:
        time.sleep(interval)
        with app.app_context():
            try:
                handled = job.run(app.config)
            except SQLAlchemyError as error:  # the database is down: try again next round
                log.warning("%s failed: %s", job.name, type(error).__name__)
                continue
            except Exception:  # a bug: logged, and the job goes on next round rather than dying quietly
                log.exception("%s failed", job.name)
                continue
        if handled:
            log.info("%s handled %d rows", job.name, handled, extra={"event": job.name, "rows": handled})
