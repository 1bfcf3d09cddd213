"""A connection that sat idle is pinged before use; one in steady use is not.

`pool_pre_ping` costs every request a round trip. A connection returned to the pool less
than PING_AFTER_IDLE_SECONDS ago was working a moment ago, so it is used as it is; one idle
for longer (the database may have restarted meanwhile) is pinged at checkout and, when dead,
replaced before the request sees it. A connection that breaks while in use is invalidated by
SQLAlchemy together with every older connection of the pool, and that request is answered 503.
"""

import time

from sqlalchemy import Engine, event, exc

PING_AFTER_IDLE_SECONDS = 1.0


def ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection, record, proxy) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.DisconnectionError(str(error)) from error  # the pool connects afresh
            raise
