"""The metadata database: SQLite through SQLAlchemy, in WAL mode.

Every module declares its tables on the one ``Base`` below, so ``create_all`` makes the whole
schema. The database holds metadata and wrapped keys only, never plaintext sensitive data.
``secure_delete`` is on so that a deleted (shredded) key row is overwritten, not left in a
free page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, create_engine, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    """Declarative base shared by every table of the metadata database."""


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on top of SQLite, which stores no zone.

    Naive datetimes are refused on the way in, so local time can never slip into a lock, an
    expiry or a retention comparison.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def make_engine(path: Path) -> Engine:
    """Open (creating if needed) the SQLite database at ``path`` with WAL and secure delete."""
    engine = create_engine(f"sqlite:///{path}", future=True, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    """Create every table declared on ``Base`` (imports the model modules first)."""
    import strongroom.models  # noqa: F401  (registers all tables)

    Base.metadata.create_all(engine)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    """A session factory whose sessions do not expire objects on commit."""
    return sessionmaker(bind=engine, expire_on_commit=False, future=True)
