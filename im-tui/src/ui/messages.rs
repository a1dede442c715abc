//! The message pane: a conversation as screen rows, newest at the bottom.
//!
//! Wide terminals get weechat's aligned columns (`HH:MM  nick │ text`, continuation rows
//! indented under the text); narrow ones an inline `HH:MM nick: text`. Rows are computed
//! from the state each time (they depend on the width), by [`rows`], which the update logic
//! also uses to page and to keep the view still while scrolled up.

use im_proto::UserName;
use im_proto::msg::RoomEventKind;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::nick_color;
use crate::app::App;
use crate::conversation::{ConvId, Conversation, Entry, OutState, Outgoing};
use crate::sanitize;
use crate::time::{Zone, day_label};
use crate::wrap::{truncate, width as text_width, wrap};

/// Panes at least this wide get aligned columns.
pub const ALIGNED_MIN_WIDTH: usize = 50;
/// The nick column of the aligned layout; longer nicks are cut with `+`, as in weechat.
pub const NICK_WIDTH: usize = 10;

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

/// The left part of an entry's first row: a nick, or a symbol for events.
struct Tag {
    text: String,
    style: Style,
}

fn nick_tag(nick: &str, mention: bool) -> Tag {
    let text = if nick.chars().count() > NICK_WIDTH {
        format!("{}+", nick.chars().take(NICK_WIDTH - 1).collect::<String>())
    } else {
        nick.to_owned()
    };
    let style = if mention {
        Style::new()
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(nick_color(nick)).add_modifier(Modifier::BOLD)
    };
    Tag { text, style }
}

/// Lays out one entry: its tag and time on the first row, its body lines wrapped below.
fn push_entry(out: &mut Vec<Line<'static>>, width: usize, time: String, tag: Tag, body: Vec<(String, Style)>) {
    let aligned = width >= ALIGNED_MIN_WIDTH;
    let time_style = dim();
    let (head, indent, first_w, rest_w): (Vec<Span<'static>>, Vec<Span<'static>>, usize, usize) = if aligned {
        let pad = NICK_WIDTH.saturating_sub(text_width(&tag.text));
        let head = vec![
            Span::styled(time, time_style),
            Span::raw(format!(" {}", " ".repeat(pad))),
            Span::styled(tag.text, tag.style),
            Span::styled(" │ ", dim()),
        ];
        let indent = vec![Span::raw(" ".repeat(6 + NICK_WIDTH)), Span::styled(" │ ", dim())];
        let w = width.saturating_sub(6 + NICK_WIDTH + 3);
        (head, indent, w, w)
    } else {
        let head_w = 6 + text_width(&tag.text) + 1;
        let head = vec![
            Span::styled(time, time_style),
            Span::raw(" "),
            Span::styled(tag.text, tag.style),
            Span::raw(" "),
        ];
        (
            head,
            vec![Span::raw("  ")],
            width.saturating_sub(head_w),
            width.saturating_sub(2),
        )
    };
    let mut first = true;
    for (line, style) in body {
        let rows = if first {
            wrap(&line, first_w, rest_w)
        } else {
            wrap(&line, rest_w, rest_w)
        };
        for row in rows {
            let mut spans = if first { head.clone() } else { indent.clone() };
            first = false;
            spans.push(Span::styled(row, style));
            out.push(Line::from(spans));
        }
    }
}

fn day_separator(day: i64, width: usize) -> Line<'static> {
    let label = format!(" {} ", day_label(day));
    let label = truncate(&label, width);
    let left = width.saturating_sub(text_width(&label)) / 2;
    let right = width.saturating_sub(text_width(&label) + left);
    Line::styled(format!("{}{label}{}", "─".repeat(left), "─".repeat(right)), dim())
}

fn body_lines(text: &str, style: Style) -> Vec<(String, Style)> {
    sanitize::lines(text).into_iter().map(|l| (l, style)).collect()
}

fn room_event(
    kind: RoomEventKind,
    user: &UserName,
    by: Option<&UserName>,
    topic: Option<&str>,
    room: &str,
) -> (Tag, String) {
    let by = by.map(|b| format!(" by {b}")).unwrap_or_default();
    let (sym, color, text) = match kind {
        RoomEventKind::Join => ("-->", Color::Green, format!("{user} joined {room}")),
        RoomEventKind::Leave => ("<--", Color::Red, format!("{user} left {room}")),
        RoomEventKind::Kick => ("<--", Color::Red, format!("{user} was kicked{by}")),
        RoomEventKind::Ban => ("<--", Color::Red, format!("{user} was banned{by}")),
        RoomEventKind::Unban => ("--", Color::Cyan, format!("{user} was unbanned{by}")),
        RoomEventKind::Op => ("--", Color::Cyan, format!("{user} is now an operator{by}")),
        RoomEventKind::Deop => ("--", Color::Cyan, format!("{user} is no longer an operator{by}")),
        RoomEventKind::Topic => match topic.filter(|t| !t.is_empty()) {
            Some(t) => (
                "--",
                Color::Cyan,
                format!("{user} set the topic: {}", sanitize::line(t)),
            ),
            None => ("--", Color::Cyan, format!("{user} cleared the topic")),
        },
    };
    (
        Tag {
            text: sym.into(),
            style: Style::new().fg(color),
        },
        text,
    )
}

fn outgoing(out: &mut Vec<Line<'static>>, width: usize, zone: Zone, me: &str, o: &Outgoing) {
    let pending = dim();
    let (tag, mut body) = if o.action {
        (
            Tag {
                text: "*".into(),
                style: pending,
            },
            body_lines(&format!("{me} {}", o.text), pending),
        )
    } else {
        (nick_tag(me, false), body_lines(&o.text, pending))
    };
    match &o.state {
        OutState::Sending => {}
        OutState::Queued => body.push(("⏳ waiting for the connection".into(), Style::new().fg(Color::Yellow))),
        OutState::Failed(why) => body.push((format!("✗ not sent: {why}"), Style::new().fg(Color::Red))),
    }
    push_entry(out, width, zone.hm(o.ts), tag, body);
}

/// The rows of one entry.
fn entry_rows(out: &mut Vec<Line<'static>>, e: &Entry, width: usize, zone: Zone, room: &str) {
    let time = zone.hm(e.ts());
    match e {
        Entry::Message { msg, mention } => {
            let style = if *mention {
                Style::new().add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            if msg.action {
                let tag = Tag {
                    text: "*".into(),
                    style: Style::new().add_modifier(Modifier::BOLD),
                };
                let body = body_lines(
                    &format!("{} {}", msg.from, msg.text),
                    style.add_modifier(Modifier::ITALIC),
                );
                push_entry(out, width, time, tag, body);
            } else {
                push_entry(
                    out,
                    width,
                    time,
                    nick_tag(msg.from.as_str(), *mention),
                    body_lines(&msg.text, style),
                );
            }
        }
        Entry::Room {
            kind, user, by, topic, ..
        } => {
            let (tag, text) = room_event(*kind, user, by.as_ref(), topic.as_deref(), room);
            push_entry(out, width, time, tag, vec![(text, Style::new())]);
        }
        Entry::Info { text, error, .. } => {
            let color = if *error { Color::Red } else { Color::Yellow };
            let tag = Tag {
                text: "-!-".into(),
                style: Style::new().fg(color),
            };
            let style = if *error {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            push_entry(out, width, time, tag, body_lines(text, style));
        }
    }
}

/// The last rows of a conversation at `width` columns, oldest first: at least `needed` of
/// them when there are that many. Built from the newest entry backwards, so drawing a long
/// conversation costs the rows on screen, not the whole history. The flag says whether
/// these are all the rows (the top was reached).
pub fn tail(
    conv: &Conversation,
    width: u16,
    zone: Zone,
    me: Option<&UserName>,
    needed: usize,
) -> (Vec<Line<'static>>, bool) {
    let width = usize::from(width);
    if width == 0 {
        return (Vec::new(), true);
    }
    let me = me.map_or("me", UserName::as_str);
    let n_entries = conv.entries.len();
    let total = n_entries + conv.outbox.len();
    let ts_of = |k: usize| {
        if k < n_entries {
            conv.entries[k].ts()
        } else {
            conv.outbox[k - n_entries].ts
        }
    };
    // Blocks of rows, newest first; each item is preceded by a day line when the day changes.
    let mut blocks: Vec<Vec<Line<'static>>> = Vec::new();
    let mut count = 0;
    let mut k = total;
    while k > 0 && count < needed {
        k -= 1;
        let mut block = Vec::new();
        let day = zone.day(ts_of(k));
        if k == 0 || zone.day(ts_of(k - 1)) != day {
            block.push(day_separator(day, width));
        }
        if k < n_entries {
            entry_rows(&mut block, &conv.entries[k], width, zone, conv.id.name());
        } else {
            outgoing(&mut block, width, zone, me, &conv.outbox[k - n_entries]);
        }
        count += block.len();
        blocks.push(block);
    }
    if k == 0 {
        if conv.history.loading {
            blocks.push(vec![Line::styled("loading older messages…", dim())]);
        } else if conv.history.opened && !conv.history.more_before && conv.id != ConvId::Status {
            blocks.push(vec![Line::styled(
                truncate("· beginning of the conversation ·", width),
                dim(),
            )]);
        }
    }
    (blocks.into_iter().rev().flatten().collect(), k == 0)
}

/// Every row of a conversation at `width` columns, oldest first.
pub fn rows(conv: &Conversation, width: u16, zone: Zone, me: Option<&UserName>) -> Vec<Line<'static>> {
    tail(conv, width, zone, me, usize::MAX).0
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let conv = app.current_conv();
    let h = usize::from(area.height);
    let (all, _) = tail(conv, area.width, app.zone, app.me(), conv.scroll.saturating_add(h));
    let scroll = conv.scroll.min(all.len().saturating_sub(h));
    let end = all.len() - scroll;
    let start = end.saturating_sub(h);
    let mut visible: Vec<Line<'static>> = all[start..end].to_vec();
    if scroll > 0 {
        let text = match conv.unseen_below {
            0 => " ▼ more below (PageDown) ".to_owned(),
            n => format!(" ▼ {n} new below (PageDown) "),
        };
        let bar = Line::styled(
            truncate(&text, area.width.into()),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        );
        if visible.len() >= h {
            visible.pop();
        }
        visible.push(bar);
    }
    // Short conversations sit at the bottom, next to the input line.
    let pad = h.saturating_sub(visible.len());
    let mut lines = vec![Line::raw(""); pad];
    lines.extend(visible);
    frame.render_widget(Paragraph::new(lines), area);
}
