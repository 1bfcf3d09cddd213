"""The migrations build exactly what the models describe, and go down and up again cleanly."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DatabaseError

from conftest import config_for
from credits_service import create_app
from credits_service.extensions import db

TABLES = {
    "api_keys", "clients", "quota_limits", "usage_records", "credit_audit_log", "idempotency_keys",
    "credit_grants",
}


def schema_diff(app):
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def table_names(app):
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


@pytest.fixture
def fresh_app(request, database_url, tmp_path):
    """An app on a database of its own (empty, not migrated), on the same backend as database_url."""
    if database_url.startswith("sqlite"):
        url = "sqlite:///" + str(tmp_path / "fresh.sqlite3")
    else:
        url = request.getfixturevalue("make_postgres_database")()
    app = create_app(config_for(url))
    yield app
    with app.app_context():
        db.engine.dispose()


def flask_db(app, *args):
    result = app.test_cli_runner().invoke(args=["db", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_models_and_migrations_agree(app):
    assert schema_diff(app) == []


def test_downgrade_to_base_then_upgrade(fresh_app):
    flask_db(fresh_app, "upgrade")
    assert TABLES <= table_names(fresh_app)
    assert schema_diff(fresh_app) == []

    flask_db(fresh_app, "downgrade", "base")
    assert table_names(fresh_app) == {"alembic_version"}

    flask_db(fresh_app, "upgrade")
    assert table_names(fresh_app) == TABLES | {"alembic_version"}
    assert schema_diff(fresh_app) == []


def test_upgrade_after_downgrade_restores_the_append_only_guard(fresh_app):
    flask_db(fresh_app, "upgrade")
    flask_db(fresh_app, "downgrade", "base")
    flask_db(fresh_app, "upgrade")
    with fresh_app.app_context():
        session = db.session()
        session.execute(text("INSERT INTO clients (id, name, created_at, updated_at) "
                             "VALUES ('acme', 'Acme', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        session.execute(text("INSERT INTO credit_audit_log (client_id, admin_id, action, details, created_at) "
                             "VALUES ('acme', 'alice@example.com', 'limit_change', '{}', CURRENT_TIMESTAMP)"))
        session.commit()
        with pytest.raises(DatabaseError):
            session.execute(text("UPDATE credit_audit_log SET admin_id = 'mallory'"))
            session.commit()
        session.rollback()
        assert session.execute(text("SELECT admin_id FROM credit_audit_log")).scalars().all() == ["alice@example.com"]
