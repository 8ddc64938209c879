//! The database engines against real servers the tests start themselves: the contract both
//! engines keep ([`contract`], run against PostgreSQL and MariaDB alike), then what each does its
//! own way ([`postgres`], [`mysql`]), their TLS modes ([`tls`], [`mysql_tls`]), PostgreSQL's
//! termination racing a session's own work ([`terminate_race`]) and PgBouncer's admin console
//! ([`pgbouncer`]). One test binary for all of them: each links poolwarden and the sandbox once.

#[path = "../support/mod.rs"]
mod support;

mod contract;
mod mysql;
mod mysql_tls;
mod pgbouncer;
mod postgres;
mod terminate_race;
mod tls;
