-- The role poolwarden connects as: it sees every session and may end other roles' sessions, and
-- nothing else. Run as a superuser (or a role with CREATEROLE) once per PostgreSQL server:
--
--   psql "postgres://postgres@db:5432/postgres" -v password='...' -f monitoring-role.sql
--
-- Never give poolwarden a superuser: only a superuser can end a superuser's sessions, and
-- poolwarden reports those (applications should not connect as `postgres`) instead.

CREATE ROLE poolwarden LOGIN PASSWORD :'password';

-- See every session's state, query start and wait events in pg_stat_activity, and
-- pg_stat_database.sessions (connection churn).
GRANT pg_monitor TO poolwarden;

-- pg_terminate_backend() on sessions of other, non-superuser roles (Enforce mode only).
GRANT pg_signal_backend TO poolwarden;

-- PostgreSQL 16 and later: connect through the reserved_connections slots, so that poolwarden
-- can still log in when applications have filled the server. Needs reserved_connections > 0 in
-- postgresql.conf (e.g. 3). Skipped on older servers.
SELECT current_setting('server_version_num')::int >= 160000 AS pg16 \gset
\if :pg16
GRANT pg_use_reserved_connections TO poolwarden;
\endif

-- poolwarden reads only catalog views: no grant on application tables is needed. It connects to
-- the database named in its URL; CONNECT on it is granted to PUBLIC by default.
