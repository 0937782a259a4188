"""Alembic environment for Keel's schema.

``keel.store.db.upgrade`` passes an open connection in
``config.attributes["connection"]``; that is the only supported way in, so
migrations run the same from a source checkout and from an installed wheel.
"""

from __future__ import annotations

from alembic import context

from keel.store.tables import metadata

# Any constant works; it only has to be the same for every Keel process.
_MIGRATION_LOCK_ID = 0x6B65656C  # "keel"


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run Keel migrations through keel.store.upgrade(engine)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several replicas may start at once; only one migrates, the rest wait
            # and then find nothing left to do. Released when the transaction ends.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
        context.run_migrations()


run_migrations()
