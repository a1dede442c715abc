//! The sidebar: conversations with their number (Alt+N), unread count and mention marker;
//! contacts with their presence; pending contact requests. Unread triage at a glance.

use im_proto::msg::{ContactState, Presence};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::app::App;
use crate::conversation::ConvId;
use crate::wrap::{truncate, width as text_width};

/// Marks a conversation that mentions us, after its unread count.
pub const MENTION_MARKER: &str = "@";

/// The symbol and colour of a presence.
pub fn presence_symbol(p: Presence) -> (&'static str, Color) {
    match p {
        Presence::Online => ("●", Color::Green),
        Presence::Away => ("◐", Color::Yellow),
        Presence::Busy => ("⊘", Color::Red),
        Presence::Offline => ("○", Color::DarkGray),
    }
}

fn header(text: &str) -> Line<'static> {
    Line::styled(
        text.to_owned(),
        Style::new().fg(Color::DarkGray).add_modifier(Modifier::BOLD),
    )
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::new()
        .borders(Borders::RIGHT)
        .border_style(Style::new().fg(Color::DarkGray));
    let inner = block.inner(area);
    let w = usize::from(inner.width);
    let mut lines: Vec<Line<'static>> = Vec::new();
    for (i, c) in app.convs.iter().enumerate() {
        let num = if i < 9 {
            format!("{:>2} ", i + 1)
        } else {
            "   ".to_owned()
        };
        let badge = match (c.unread, c.mentions) {
            (0, _) => String::new(),
            (n, 0) => format!("{n}"),
            (n, _) => format!("{n}{MENTION_MARKER}"),
        };
        let name_w = w.saturating_sub(text_width(&num) + text_width(&badge) + 1);
        let name = truncate(c.id.name(), name_w);
        let gap = w.saturating_sub(text_width(&num) + text_width(&name) + text_width(&badge));
        let mut name_style = Style::new();
        if c.unread > 0 {
            name_style = name_style.add_modifier(Modifier::BOLD);
        }
        if matches!(c.id, ConvId::With(im_proto::Target::Room(_))) && !c.joined {
            name_style = name_style.fg(Color::DarkGray);
        }
        let badge_style = if c.mentions > 0 {
            Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Cyan)
        };
        let mut line = Line::from(vec![
            Span::styled(num, Style::new().fg(Color::DarkGray)),
            Span::styled(name, name_style),
            Span::raw(" ".repeat(gap)),
            Span::styled(badge, badge_style),
        ]);
        if i == app.current {
            line = line.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        lines.push(line);
    }
    let contacts: Vec<_> = app
        .contacts
        .values()
        .filter(|c| c.state == ContactState::Accepted)
        .collect();
    if !contacts.is_empty() {
        lines.push(Line::raw(""));
        lines.push(header(" Contacts"));
        for c in contacts {
            let (sym, color) = presence_symbol(c.presence);
            let name = truncate(c.user.as_str(), w.saturating_sub(3));
            let style = if c.presence == Presence::Offline {
                Style::new().fg(Color::DarkGray)
            } else {
                Style::new()
            };
            lines.push(Line::from(vec![
                Span::raw(" "),
                Span::styled(sym, Style::new().fg(color)),
                Span::raw(" "),
                Span::styled(name, style),
            ]));
        }
    }
    let requests: Vec<_> = app
        .contacts
        .values()
        .filter(|c| c.state != ContactState::Accepted)
        .collect();
    if !requests.is_empty() {
        lines.push(Line::raw(""));
        lines.push(header(" Requests"));
        for c in requests {
            let (arrow, style) = match c.state {
                ContactState::Incoming => ("←", Style::new().fg(Color::Yellow)),
                _ => ("→", Style::new().fg(Color::DarkGray)),
            };
            let name = truncate(c.user.as_str(), w.saturating_sub(3));
            lines.push(Line::from(vec![
                Span::raw(" "),
                Span::styled(arrow, style),
                Span::raw(" "),
                Span::styled(name, style),
            ]));
        }
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
