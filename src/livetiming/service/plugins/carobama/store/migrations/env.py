"""Alembic environment of the carobama store: always run programmatically on a given connection.

:func:`livetiming.service.plugins.carobama.store.db.upgrade` puts an open connection in
``config.attributes["connection"]``; there is no ``alembic.ini`` and no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from livetiming.service.plugins.carobama.store.schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the carobama store migrations run through store.db.upgrade(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
