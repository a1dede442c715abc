//! Durable state, split by write pattern (see ARCHITECTURE.md):
//! - [`messages`]: the message log, append-heavy and spread over many conversations, on an
//!   LSM tree (fjall) with group commit, so its write path stays sequential.
//! - [`accounts`]: users, devices, keys, tickets, rooms, memberships, contacts, blocks: small,
//!   relational, read-mostly, in SQLite (WAL) with versioned migrations.

pub mod accounts;
pub mod messages;
