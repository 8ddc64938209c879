//! Telling people what a cycle saw and did: a table for the terminal, JSON for machines.

pub mod audit;
mod json;
mod table;
mod text;

pub use json::to_json;
pub use text::{checked_out_note, cycle_line, render, status};
