"""Alembic migrations of the SQL store, shipped in the package and run by :mod:`vital_callbacks.store.migrate`.

Users never need an ``alembic.ini``: ``vital-callbacks db upgrade`` (or auto-migrate) builds the
Alembic config in code. Developers add a revision by copying the newest file in ``versions/`` and
running ``tests/test_migrations.py``, whose autogenerate comparison fails until the migrations and
``vital_callbacks/store/schema.py`` describe the same schema.
"""

VERSION_TABLE = "vital_callbacks_version"
"""Not Alembic's default ``alembic_version``, so the store can share a database with an app that
runs its own Alembic migrations."""
