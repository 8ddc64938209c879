//! What a policy connects to, kept across cycles: one monitoring connection and one shared look
//! per database server ([`engines`], [`looks`]), the PgBouncer consoles in front ([`poolers`]),
//! and the database URLs read from Secrets only when they change ([`secret`]).

pub(super) mod engines;
pub(super) mod looks;
pub(super) mod poolers;
pub(super) mod secret;
