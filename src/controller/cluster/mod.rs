//! The cluster, as poolwarden keeps it: the [`watch`]es (each made to keep going on any API
//! server by [`watcher`]) decode [`trimmed`] pods, owners and [`scaling`] workloads into the
//! [`index`] that attributes sessions to workloads; [`kinds`] is the one table of the owner kinds
//! followed; [`readiness`] says when every watch has listed once.

pub(super) mod index;
pub(super) mod kinds;
pub(super) mod readiness;
pub(super) mod scaling;
pub(super) mod trimmed;
pub(super) mod watch;
pub(super) mod watcher;
