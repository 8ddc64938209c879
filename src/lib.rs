//! poolwarden finds the PostgreSQL sessions applications leak, names the workload that leaked them,
//! and ends the ones a policy condemns.
//!
//! One direction through the code:
//! [`database`] observes a snapshot → [`decide`] (pure) → [`act`] terminates → [`report`] tells.

pub mod act;
pub mod api;
pub mod cli;
pub mod controller;
pub mod cycle;
pub mod database;
pub mod decide;
#[cfg(feature = "demo")]
pub mod demo;
pub mod report;
pub mod signals;
pub mod standalone;
pub mod telemetry;
