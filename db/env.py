"""Alembic environment: ablate passes its own connection (see ablate.store.migrate)."""

from alembic import context

# ablate.store passes its metadata (importing the ablate package here would load torch for nothing)
target_metadata = context.config.attributes.get("target_metadata")
if target_metadata is None:
    from ablate.store import Base

    target_metadata = Base.metadata
connection = context.config.attributes.get("connection")
if connection is None:  # `alembic -c db/alembic.ini upgrade head` from a shell
    from ablate.store import default_db_url, make_engine

    connection = make_engine(context.config.get_main_option("sqlalchemy.url") or default_db_url()).connect()

context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
