//! Integration tests, in one binary so the crate links once. The fakes live in tests/support.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod app;
mod binary;
mod cli;
mod discord;
mod linking;
mod logs;
mod tokens;
