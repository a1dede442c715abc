//! A question in a box over the screen: the first-run setup, a password, an unknown host key
//! (with its fingerprint, to be checked before accepting), or why the login cannot succeed.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::input::draw_editor;
use crate::app::{Prompt, PromptKind};
use crate::sanitize;
use crate::wrap::wrap;

/// The box is at most this wide.
pub const MAX_WIDTH: u16 = 76;

pub fn draw(p: &Prompt, frame: &mut Frame, area: Rect) {
    let hint = Style::new().fg(Color::DarkGray);
    let (title, mut lines, editor, mask): (&str, Vec<Line<'static>>, bool, bool) = match &p.kind {
        PromptKind::Server => (
            " Welcome to im ",
            vec![
                Line::raw("No account is set up in this home yet."),
                Line::raw("Server (HOST or HOST:PORT):"),
            ],
            true,
            false,
        ),
        PromptKind::User => (" Welcome to im ", vec![Line::raw("Your user name:")], true, false),
        PromptKind::Account => (
            " Welcome to im ",
            vec![
                Line::raw("Log in to an existing account, or create it?"),
                Line::styled("[l] log in   [r] register   [Esc] quit", hint),
            ],
            false,
            false,
        ),
        PromptKind::Password {
            server,
            user,
            register,
            first,
            ..
        } => {
            let q = match (register, first) {
                (false, _) => format!("Password for {user} on {server}:"),
                (true, None) => format!("Choose a password for {user} on {server}:"),
                (true, Some(_)) => "The same password again:".to_owned(),
            };
            (" Log in ", vec![Line::raw(q)], true, true)
        }
        PromptKind::HostKey { server, fingerprint } => (
            " Unknown server key ",
            vec![
                Line::raw(format!("The host key of {} is not known yet.", sanitize::line(server))),
                Line::raw("Its fingerprint is"),
                Line::styled(
                    format!("  {}", sanitize::line(fingerprint)),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Line::raw("Check it with the server's operator before trusting it."),
                Line::styled("Trust it and connect?  [y] yes   [n] no", hint),
            ],
            false,
            false,
        ),
        PromptKind::Fatal(text) => {
            let mut lines: Vec<Line<'static>> = sanitize::lines(text)
                .into_iter()
                .map(|l| Line::styled(l, Style::new().fg(Color::LightRed)))
                .collect();
            lines.push(Line::styled("Press Enter to quit.", hint));
            (" Cannot log in ", lines, false, false)
        }
    };
    if let Some(e) = &p.error {
        lines.push(Line::styled(sanitize::line(e), Style::new().fg(Color::LightRed)));
    }
    let width = area.width.min(MAX_WIDTH).max(area.width.min(20));
    let inner_w = usize::from(width.saturating_sub(2).max(1));
    // Wrapped here (not by the Paragraph) so that the box is exactly as tall as its text.
    let rows: Vec<Line<'static>> = lines
        .into_iter()
        .flat_map(|l| {
            let style = l.spans.first().map_or(l.style, |s| l.style.patch(s.style));
            wrap(&l.to_string(), inner_w, inner_w)
                .into_iter()
                .map(move |r| Line::styled(r, style))
        })
        .collect();
    let height = (rows.len() as u16)
        .saturating_add(u16::from(editor) + 2)
        .min(area.height);
    let x = area.x + (area.width - width) / 2;
    let y = area.y + area.height.saturating_sub(height) / 2;
    let rect = Rect::new(x, y, width, height);
    let block = Block::new()
        .borders(Borders::ALL)
        .title(title)
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(rect);
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(rows).block(block), rect);
    if editor && inner.height > 0 {
        let row = Rect::new(inner.x, inner.y + inner.height - 1, inner.width, 1);
        draw_editor(&p.editor, "> ", mask, frame, row);
    }
}
