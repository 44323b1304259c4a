"""Alembic's entry point: migrate over the connection that :mod:`vital_callbacks.store.migrate` hands in.

Only online migrations on a caller-provided connection are supported, so there is no URL (and no
credential) in any config file.
"""

from __future__ import annotations

from alembic import context
from alembic.config import Config

from vital_callbacks.store.migrations import VERSION_TABLE
from vital_callbacks.store.schema import metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("vital-callbacks migrations run through vital_callbacks.store.migrate.upgrade(url)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


_config: Config | None
try:
    _config = context.config
except (AttributeError, NameError):  # imported outside an Alembic run (e.g. by a module scanner): nothing to do
    _config = None
if _config is not None:
    run()
