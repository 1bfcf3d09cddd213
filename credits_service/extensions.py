"""Unbound extensions; create_app binds them to an app."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names keep migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Objects keep the values their own transaction wrote after it commits: an answer built after
# the commit must not re-read a row another request has changed since.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})

# Routes name their own key function (the authenticated principal); unauthenticated
# traffic falls back to the remote address.
limiter = Limiter(key_func=get_remote_address)
