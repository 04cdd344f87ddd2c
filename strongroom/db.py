"""The metadata database: SQLite through SQLAlchemy, in WAL mode.

Every module declares its tables on the one ``Base`` below, so ``create_all`` makes the whole
schema. The database holds metadata and wrapped keys only, never plaintext sensitive data.
``secure_delete`` is on so that a deleted (shredded) key row is overwritten, not left in a
free page.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    """Declarative base shared by every table of the metadata database."""


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
