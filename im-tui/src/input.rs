//! The input line: a one-line editor with readline's keys, a history of sent lines, and Tab
//! completion of commands, rooms and nicks.
//!
//! The cursor is a byte offset that always sits on a grapheme boundary, so Left, Right and
//! Backspace step over a whole `é` or emoji, never into the middle of one.

use unicode_segmentation::UnicodeSegmentation;

use crate::wrap::grapheme_width;

/// How many sent lines Up can bring back.
pub const HISTORY_LEN: usize = 500;

/// An editing key, already decoded from the terminal event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditOp {
    Insert(char),
    InsertStr(String),
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Backspace,
    Delete,
    /// Ctrl+W: the word before the cursor.
    DeleteWordBack,
    /// Ctrl+U: everything before the cursor.
    DeleteToStart,
    /// Ctrl+K: everything after the cursor.
    DeleteToEnd,
}

/// What Tab completes, given the word under the cursor.
#[derive(Debug, Default, Clone)]
pub struct Candidates {
    /// Command names without the slash.
    pub commands: Vec<String>,
    /// Room names with their `#`.
    pub rooms: Vec<String>,
    /// User names, most relevant first (the conversation's members and speakers).
    pub nicks: Vec<String>,
}

/// A completion in progress: repeated Tabs cycle through `matches`.
#[derive(Debug, Clone)]
struct Completion {
    /// Byte offset where the completed word starts.
    start: usize,
    matches: Vec<String>,
    index: usize,
}

#[derive(Debug, Default, Clone)]
pub struct LineEditor {
    text: String,
    cursor: usize,
    history: Vec<String>,
    /// Which history entry is shown (`None`: the line being written).
    history_pos: Option<usize>,
    /// The line being written, kept while browsing the history.
    draft: String,
    completion: Option<Completion>,
}

impl LineEditor {
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The cursor's column: the width of the text before it.
    pub fn cursor_col(&self) -> usize {
        self.text[..self.cursor].graphemes(true).map(grapheme_width).sum()
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map_or(self.cursor, |g| self.cursor + g.len())
    }

    /// Start of the word before the cursor (skipping spaces first), as Ctrl+W sees it.
    fn word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(' ');
        trimmed.rfind(' ').map_or(0, |i| i + 1)
    }

    fn word_end(&self) -> usize {
        let after = &self.text[self.cursor..];
        let skip = after.len() - after.trim_start_matches(' ').len();
        let rest = &after[skip..];
        self.cursor + skip + rest.find(' ').unwrap_or(rest.len())
    }

    /// Applies an editing key. Returns whether the text changed.
    pub fn apply(&mut self, op: EditOp) -> bool {
        self.completion = None;
        let before = self.text.len();
        match op {
            EditOp::Insert(c) => {
                self.text.insert(self.cursor, c);
                self.cursor += c.len_utf8();
                // A combining mark joins the grapheme before it: keep the cursor on a boundary.
                self.snap_cursor();
                return true;
            }
            EditOp::InsertStr(s) => {
                self.text.insert_str(self.cursor, &s);
                self.cursor += s.len();
                self.snap_cursor();
                return !s.is_empty();
            }
            EditOp::Left => self.cursor = self.prev_boundary(),
            EditOp::Right => self.cursor = self.next_boundary(),
            EditOp::WordLeft => self.cursor = self.word_start(),
            EditOp::WordRight => self.cursor = self.word_end(),
            EditOp::Home => self.cursor = 0,
            EditOp::End => self.cursor = self.text.len(),
            EditOp::Backspace => {
                let start = self.prev_boundary();
                self.text.replace_range(start..self.cursor, "");
                self.cursor = start;
            }
            EditOp::Delete => {
                let end = self.next_boundary();
                self.text.replace_range(self.cursor..end, "");
            }
            EditOp::DeleteWordBack => {
                let start = self.word_start();
                self.text.replace_range(start..self.cursor, "");
                self.cursor = start;
            }
            EditOp::DeleteToStart => {
                self.text.replace_range(..self.cursor, "");
                self.cursor = 0;
            }
            EditOp::DeleteToEnd => self.text.truncate(self.cursor),
        }
        self.text.len() != before
    }

    /// Moves the cursor forward to the next grapheme boundary if it is inside a grapheme.
    fn snap_cursor(&mut self) {
        let mut at = 0;
        for g in self.text.graphemes(true) {
            if at >= self.cursor {
                break;
            }
            at += g.len();
        }
        self.cursor = at;
    }

    /// Replaces the whole line, cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
        self.completion = None;
    }

    /// Empties the line and returns what it held; a non-blank line goes into the history.
    pub fn take(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.history_pos = None;
        self.draft.clear();
        self.completion = None;
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > HISTORY_LEN {
                self.history.remove(0);
            }
        }
        line
    }

    /// Empties the line without putting it in the history (a password).
    pub fn take_secret(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        line
    }

    /// Up: the previous line sent.
    pub fn history_prev(&mut self) {
        let pos = match self.history_pos {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(p) => p - 1,
        };
        self.history_pos = Some(pos);
        let line = self.history[pos].clone();
        self.set(&line);
    }

    /// Down: the next line sent, then back to the line being written.
    pub fn history_next(&mut self) {
        let Some(p) = self.history_pos else { return };
        if p + 1 < self.history.len() {
            self.history_pos = Some(p + 1);
            let line = self.history[p + 1].clone();
            self.set(&line);
        } else {
            self.history_pos = None;
            let draft = std::mem::take(&mut self.draft);
            self.set(&draft);
        }
    }

    /// Tab: completes the word before the cursor, or, right after a completion, replaces it
    /// with the next match. A command completes only as the first word; `#` starts a room;
    /// anything else is a nick, which gets `: ` after it at the start of the line.
    pub fn complete(&mut self, candidates: &Candidates) {
        if let Some(mut c) = self.completion.take() {
            if c.matches.len() > 1 {
                c.index = (c.index + 1) % c.matches.len();
                let word = c.matches[c.index].clone();
                self.text.replace_range(c.start..self.cursor, &word);
                self.cursor = c.start + word.len();
            }
            self.completion = Some(c);
            return;
        }
        let start = self.text[..self.cursor].rfind(' ').map_or(0, |i| i + 1);
        let word = &self.text[start..self.cursor];
        if word.is_empty() {
            return;
        }
        let lower = word.to_lowercase();
        let matches: Vec<String> = if let Some(cmd) = lower.strip_prefix('/').filter(|_| start == 0) {
            candidates
                .commands
                .iter()
                .filter(|c| c.starts_with(cmd))
                .map(|c| format!("/{c} "))
                .collect()
        } else if lower.starts_with('#') {
            candidates
                .rooms
                .iter()
                .filter(|r| r.starts_with(&lower))
                .map(|r| format!("{r} "))
                .collect()
        } else {
            let bare = lower.trim_start_matches('@');
            let at = if lower.starts_with('@') { "@" } else { "" };
            let suffix = if start == 0 { ": " } else { " " };
            let mut seen = Vec::new();
            for n in &candidates.nicks {
                if n.starts_with(bare) && !seen.contains(n) {
                    seen.push(n.clone());
                }
            }
            seen.into_iter().map(|n| format!("{at}{n}{suffix}")).collect()
        };
        let Some(first) = matches.first().cloned() else { return };
        self.text.replace_range(start..self.cursor, &first);
        self.cursor = start + first.len();
        self.completion = Some(Completion {
            start,
            matches,
            index: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> LineEditor {
        let mut e = LineEditor::default();
        for c in s.chars() {
            e.apply(EditOp::Insert(c));
        }
        e
    }

    #[test]
    fn cursor_moves_by_grapheme() {
        let mut e = typed("ae\u{301}日🦀");
        assert_eq!(e.cursor_col(), 1 + 1 + 2 + 2);
        e.apply(EditOp::Left);
        assert_eq!(e.cursor_col(), 4);
        e.apply(EditOp::Backspace);
        assert_eq!(e.text(), "ae\u{301}🦀");
        e.apply(EditOp::Backspace);
        assert_eq!(e.text(), "a🦀", "the accent goes with its letter");
        e.apply(EditOp::Home);
        e.apply(EditOp::Delete);
        assert_eq!(e.text(), "🦀");
        e.apply(EditOp::End);
        e.apply(EditOp::Right);
        assert_eq!(e.cursor(), e.text().len());
    }

    #[test]
    fn a_combining_mark_typed_after_a_letter_joins_it() {
        let mut e = typed("e");
        e.apply(EditOp::Insert('\u{301}'));
        assert_eq!((e.text(), e.cursor_col()), ("e\u{301}", 1));
        e.apply(EditOp::Left);
        assert_eq!(e.cursor(), 0);
    }

    #[test]
    fn readline_kills() {
        let mut e = typed("hello big  world");
        e.apply(EditOp::DeleteWordBack);
        assert_eq!(e.text(), "hello big  ");
        e.apply(EditOp::DeleteWordBack);
        assert_eq!(e.text(), "hello ");
        e.set("one two three");
        e.apply(EditOp::WordLeft);
        e.apply(EditOp::DeleteToStart);
        assert_eq!((e.text(), e.cursor()), ("three", 0));
        e.apply(EditOp::WordRight);
        assert_eq!(e.cursor(), 5);
        e.apply(EditOp::Home);
        e.apply(EditOp::Right);
        e.apply(EditOp::DeleteToEnd);
        assert_eq!(e.text(), "t");
        e.apply(EditOp::Home);
        e.apply(EditOp::Insert('a'));
        assert_eq!((e.text(), e.cursor()), ("at", 1));
    }

    #[test]
    fn history_keeps_the_draft() {
        let mut e = LineEditor::default();
        for line in ["first", "second", "second", "  "] {
            e.set(line);
            e.take();
        }
        e.set("draft");
        e.history_prev();
        assert_eq!(e.text(), "second");
        e.history_prev();
        assert_eq!(e.text(), "first");
        e.history_prev();
        assert_eq!(e.text(), "first", "stops at the oldest");
        e.history_next();
        assert_eq!(e.text(), "second");
        e.history_next();
        assert_eq!(e.text(), "draft");
        e.history_next();
        assert_eq!(e.text(), "draft");
        assert_eq!(e.history.len(), 2, "duplicates and blank lines are not kept");
    }

    fn candidates() -> Candidates {
        Candidates {
            commands: ["join", "msg", "me", "names"].map(String::from).to_vec(),
            rooms: ["#rust", "#ruby", "#ops"].map(String::from).to_vec(),
            nicks: ["bob", "bea", "carol", "bob"].map(String::from).to_vec(),
        }
    }

    #[test]
    fn tab_completes_commands_rooms_and_nicks() {
        let c = candidates();
        let mut e = typed("/jo");
        e.complete(&c);
        assert_eq!(e.text(), "/join ");
        e.apply(EditOp::Insert('#'));
        e.apply(EditOp::Insert('o'));
        e.complete(&c);
        assert_eq!(e.text(), "/join #ops ");
        let mut e = typed("ca");
        e.complete(&c);
        assert_eq!(e.text(), "carol: ", "a nick at the start gets a colon");
        let mut e = typed("hi @ca");
        e.complete(&c);
        assert_eq!(e.text(), "hi @carol ");
        let mut e = typed("x /jo");
        e.complete(&c);
        assert_eq!(e.text(), "x /jo", "commands complete only at the start");
    }

    #[test]
    fn repeated_tabs_cycle_and_editing_stops_the_cycle() {
        let c = candidates();
        let mut e = typed("ask b");
        e.complete(&c);
        assert_eq!(e.text(), "ask bob ");
        e.complete(&c);
        assert_eq!(e.text(), "ask bea ");
        e.complete(&c);
        assert_eq!(e.text(), "ask bob ", "duplicates are offered once; it wraps around");
        e.apply(EditOp::Insert('x'));
        e.complete(&c);
        assert_eq!(e.text(), "ask bob x");
        let mut e = typed("/m");
        e.complete(&c);
        e.complete(&c);
        assert_eq!(e.text(), "/me ");
        let mut e = typed("zz");
        e.complete(&c);
        assert_eq!(e.text(), "zz");
    }
}
