//! Drawing: [`draw`] paints the whole screen from the [`App`] and changes nothing. Each part
//! of the screen has its own module, so each can be tested alone with ratatui's
//! `TestBackend`.

pub mod input;
pub mod messages;
pub mod prompt;
pub mod sidebar;
pub mod status;

use ratatui::Frame;
use ratatui::style::Color;

use crate::app::App;
use crate::layout::Areas;

/// Nick colours: readable on dark and light backgrounds alike, none of them the default
/// foreground, so a nick never looks like message text.
const NICK_COLORS: [Color; 12] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
];

/// A stable colour for a name: FNV-1a of its bytes, so a person keeps their colour across
/// runs, rooms and machines.
pub fn nick_color(name: &str) -> Color {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    NICK_COLORS[h as usize % NICK_COLORS.len()]
}

pub fn draw(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let a = Areas::new(area, app.notice.is_some());
    if let Some(s) = a.sidebar {
        sidebar::draw(app, frame, s);
    }
    messages::draw(app, frame, a.messages);
    if let (Some(r), Some(n)) = (a.notice, &app.notice) {
        status::draw_notice(n, frame, r);
    }
    status::draw(app, frame, a.status);
    match &app.prompt {
        Some(p) => prompt::draw(p, frame, area),
        None => input::draw(app, frame, a.input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_colours_are_stable_and_spread() {
        assert_eq!(nick_color("alice"), nick_color("alice"));
        let colours: std::collections::HashSet<_> =
            ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
                .iter()
                .map(|n| nick_color(n))
                .collect();
        assert!(colours.len() >= 5, "{colours:?}");
    }
}

#[cfg(test)]
mod screens;
