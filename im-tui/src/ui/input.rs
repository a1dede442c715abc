//! The input line, scrolled sideways so the cursor is always on screen. Also draws a prompt's
//! editor (masked for passwords).

use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use unicode_segmentation::UnicodeSegmentation;

use crate::app::App;
use crate::input::LineEditor;
use crate::wrap::grapheme_width;

/// What the input line starts with.
pub const PROMPT: &str = "> ";

/// Draws `editor` after `prefix` in `area` and puts the terminal cursor at its cursor.
/// `mask`: show each grapheme as `•` (a password).
pub fn draw_editor(editor: &LineEditor, prefix: &str, mask: bool, frame: &mut Frame, area: Rect) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let graphemes: Vec<(usize, &str, usize)> = editor
        .text()
        .grapheme_indices(true)
        .map(|(i, g)| (i, g, if mask { 1 } else { grapheme_width(g) }))
        .collect();
    let avail = usize::from(area.width).saturating_sub(prefix.len()).max(1);
    let cursor_col: usize = graphemes
        .iter()
        .take_while(|(i, _, _)| *i < editor.cursor())
        .map(|(_, _, w)| w)
        .sum();
    // Skip graphemes from the left until the cursor fits (one cell spare for it).
    let mut skip_w = 0;
    let mut first = 0;
    while cursor_col - skip_w >= avail && first < graphemes.len() {
        skip_w += graphemes[first].2;
        first += 1;
    }
    let mut shown = String::new();
    let mut used = 0;
    for &(_, g, w) in &graphemes[first..] {
        if used + w > avail {
            break;
        }
        shown.push_str(if mask { "•" } else { g });
        used += w;
    }
    let line = Line::from(vec![
        Span::styled(prefix.to_owned(), Style::new().fg(Color::Cyan)),
        Span::raw(shown),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    let x = area.x + (prefix.len() + cursor_col - skip_w).min(usize::from(area.width) - 1) as u16;
    frame.set_cursor_position(Position::new(x, area.y));
}

pub fn draw(app: &App, frame: &mut Frame, area: Rect) {
    draw_editor(&app.input, PROMPT, false, frame, area);
}
