//! The status bar (connection, own presence, the conversation and its topic, who is typing,
//! activity elsewhere) and the status line above it (the last command's result or error).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::sidebar::MENTION_MARKER;
use crate::app::{App, Conn, Notice};
use crate::sanitize;
use crate::wrap::{truncate, width as text_width};

fn bar() -> Style {
    Style::new().fg(Color::White).bg(Color::Blue)
}

/// "bob is typing…", "bob and carol are typing…", "4 people are typing…".
pub fn typing_text(names: &[&im_proto::UserName]) -> Option<String> {
    match names {
        [] => None,
        [a] => Some(format!("{a} is typing…")),
        [a, b] => Some(format!("{a} and {b} are typing…")),
        more => Some(format!("{} people are typing…", more.len())),
    }
}

/// Conversations with unread messages, by number: `act: 3,5@`.
fn activity(app: &App) -> Option<String> {
    let list: Vec<String> = app
        .convs
        .iter()
        .enumerate()
        .filter(|(_, c)| c.unread > 0)
        .map(|(i, c)| {
            if c.mentions > 0 {
                format!("{}{MENTION_MARKER}", i + 1)
            } else {
                (i + 1).to_string()
            }
        })
        .collect();
    (!list.is_empty()).then(|| format!("act: {}", list.join(",")))
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    let (state, color) = match &app.conn {
        Conn::Setup => ("setup", Color::Yellow),
        Conn::Connecting => ("connecting…", Color::Yellow),
        Conn::Retrying { .. } => ("offline, retrying…", Color::LightRed),
        Conn::Online => ("connected", Color::LightGreen),
        Conn::Reconnecting(_) => ("reconnecting…", Color::LightRed),
        Conn::Offline(_) => ("offline", Color::LightRed),
    };
    let mut left = vec![
        Span::raw("["),
        Span::styled(state, Style::new().fg(color).add_modifier(Modifier::BOLD)),
        Span::raw("] "),
    ];
    if let Some(me) = app.me() {
        let text = app
            .status_text
            .as_deref()
            .map(|t| format!(": {}", sanitize::line(t)))
            .unwrap_or_default();
        left.push(Span::raw(format!("[{me} {}{text}] ", app.presence)));
    }
    let conv = app.current_conv();
    left.push(Span::styled(
        format!("{}:{}", app.current + 1, conv.id.name()),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    if let Some(t) = conv.topic.as_deref().filter(|t| !t.is_empty()) {
        left.push(Span::raw(format!(" {}", sanitize::line(t))));
    }
    let mut right: Vec<String> = Vec::new();
    if let Some(t) = typing_text(&app.typing_here()) {
        right.push(t);
    }
    if let Some(a) = activity(app) {
        right.push(format!("[{a}]"));
    }
    let right = right.join(" ");
    let width = usize::from(area.width);
    let right_w = text_width(&right).min(width);
    let left_max = width.saturating_sub(right_w + usize::from(right_w > 0));
    // Cut the left part span by span, so its styles survive.
    let mut used = 0;
    let mut spans = Vec::new();
    for s in left {
        let w = text_width(&s.content);
        if used + w <= left_max {
            used += w;
            spans.push(s);
        } else {
            let cut = truncate(&s.content, left_max - used);
            used += text_width(&cut);
            spans.push(Span::styled(cut, s.style));
            break;
        }
    }
    spans.push(Span::raw(" ".repeat(width.saturating_sub(used + right_w))));
    spans.push(Span::styled(
        truncate(&right, width),
        Style::new().add_modifier(Modifier::ITALIC),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar()), area);
}

pub fn draw_notice(n: &Notice, frame: &mut Frame, area: Rect) {
    let (prefix, style) = if n.error {
        ("error: ", Style::new().fg(Color::LightRed).add_modifier(Modifier::BOLD))
    } else {
        ("", Style::new().fg(Color::Cyan))
    };
    let text = truncate(&format!("{prefix}{}", sanitize::line(&n.text)), area.width.into());
    frame.render_widget(Paragraph::new(Line::styled(text, style)), area);
}
