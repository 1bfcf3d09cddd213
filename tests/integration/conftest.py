"""Databases for the real server processes of these tests, each migrated and of its own.

`server_database` is the one backend a test needs a server on: PostgreSQL when the run has
TEST_DATABASE_URL (production's database), else a SQLite file. `each_backend_database` runs a
test on both, PostgreSQL skipped without TEST_DATABASE_URL.
"""

import os

import pytest

from conftest import migrated

BACKENDS = ("postgresql", "sqlite")


def new_database(request, backend: str, folder) -> str:
    """A migrated database of its own: a PostgreSQL one made for this run, or a SQLite file in folder."""
    if backend == "postgresql":
        url = request.getfixturevalue("make_postgres_database")()
    else:
        url = "sqlite:///" + str(folder / "credits.sqlite3")
    migrated(url)
    return url


@pytest.fixture(scope="module")
def server_database(request, tmp_path_factory):
    backend = "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite"
    return new_database(request, backend, tmp_path_factory.mktemp(backend))


@pytest.fixture(scope="module", params=BACKENDS)
def each_backend_database(request, tmp_path_factory):
    return new_database(request, request.param, tmp_path_factory.mktemp(request.param))
