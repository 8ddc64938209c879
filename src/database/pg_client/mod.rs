//! A client of PostgreSQL's protocol, apart from what poolwarden asks over it: the URL (libpq's
//! form, `sslmode` and `sslrootcert` honoured), TLS, connecting with keepalives and timeouts, and
//! what a failure means. The PostgreSQL engine ([`super::postgres`]) and the PgBouncer console
//! ([`super::pgbouncer`], which speaks the same protocol) both connect through it.

mod connect;
mod tls;

pub use connect::{PgTarget, classify_query_error, error_detail, refused_tls};
pub use tls::PgSslMode;
