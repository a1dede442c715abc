//! `im-tui`: the terminal chat client people keep open all day, over the `im-client`
//! library (same home, config, known_hosts, keys and device as the `im-client` command).
//!
//! Events become [`Action`](action::Action)s; [`App::update`](app::App::update) changes the
//! state and returns [`Effect`](action::Effect)s; [`ui::draw`] only reads the state. The
//! network lives in a worker task behind channels, so the UI never waits on it.
//!
//! # Layout
//! - `main.rs` (the binary): arguments, terminal setup and restore (panic hook included), the
//!   event loop that feeds actions to the app and carries out its effects.
//! - [`app`]: the state and `update`: conversations, contacts, prompts, the outbox logic,
//!   unread counts and mentions, scrolling. Tested without a terminal (`app/tests.rs`).
//! - [`action`]: `Action` and `Effect`, and the keymap from terminal events to actions.
//! - [`worker`]: the network task over `im_client::Client`/`Events`: login (with questions
//!   for the UI), requests, pushes, the in-order outbox.
//! - [`conversation`]: one conversation's entries (sorted, deduplicated by id), outbox,
//!   unread counts, history paging state.
//! - [`commands`]: slash-command parsing and the command list for `/help` and completion.
//! - [`input`]: the line editor, its history and Tab completion.
//! - [`layout`]: where each part of the screen goes at a given size.
//! - [`ui`]: drawing, one module per part of the screen.
//! - [`wrap`]: display widths (grapheme clusters) and word wrapping.
//! - [`sanitize`]: neutralising control and bidi characters in untrusted text.
//! - [`mention`]: does a message name us.
//! - [`time`]: local times and day labels.

pub mod action;
pub mod app;
pub mod commands;
pub mod conversation;
pub mod input;
pub mod layout;
pub mod mention;
pub mod sanitize;
pub mod time;
pub mod ui;
pub mod worker;
pub mod wrap;
