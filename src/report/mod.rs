//! Telling people what a cycle saw and did: a table for the terminal, JSON for machines.

pub mod audit;
pub mod eviction_audit;
mod json;
mod run_lines;
mod table;
mod text;

pub use json::to_json;
pub use run_lines::{cycle_line, run_lines};
pub use text::{checked_out_note, recovery_lines, render, status};
