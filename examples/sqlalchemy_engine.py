"""How an application's engine tells PostgreSQL which pod it is (application_name = pod name).

poolwarden attributes each session to a pod by its address, or by its application_name when that
is a pod's name. Set POD_NAME from the downward API (see workload.yaml).
"""

import os

from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

POD_NAME = os.environ.get("POD_NAME", "local")
DATABASE_URL = os.environ["DATABASE_URL"]  # e.g. postgresql+psycopg://app:...@db:5432/app

# Synchronous, libpq-based drivers (psycopg 3, psycopg2). PGAPPNAME in the environment does the
# same without code; connect_args makes it explicit and wins over it.
engine = create_engine(
    DATABASE_URL,
    pool_size=5,
    max_overflow=10,  # pool_size + max_overflow = 15: the workload's poolwarden.io/pool-max
    pool_pre_ping=True,
    connect_args={"application_name": POD_NAME},
)

# asyncpg ignores PGAPPNAME: pass application_name as a server setting.
async_engine = create_async_engine(
    DATABASE_URL.replace("+psycopg", "+asyncpg"),
    pool_size=5,
    max_overflow=10,
    pool_pre_ping=True,
    connect_args={"server_settings": {"application_name": POD_NAME}},
)


def worker_init() -> None:
    """Seed 000: a process forked from one holding a pool must not use the inherited connections.

    Pass as ProcessPoolExecutor(initializer=worker_init), or use the "spawn" start method.
    """
    engine.dispose(close=False)
