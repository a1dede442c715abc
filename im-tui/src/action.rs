//! Everything that can happen to the UI becomes an [`Action`]: keys and mouse (decoded here
//! by [`from_terminal`], so the keymap is in one place), resizes, clock ticks, and news from
//! the network worker. [`App::update`](crate::app::App::update) takes actions and returns
//! [`Effect`]s, the only way the state reaches the outside world.

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind};
use im_proto::msg::Timestamp;

use crate::input::EditOp;
use crate::worker::{Answer, LoginPlan, NetEvent, Request};

/// Rows one mouse-wheel step scrolls.
pub const WHEEL_ROWS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Edit(EditOp),
    HistoryPrev,
    HistoryNext,
    Complete,
    Submit,
    /// Esc: dismiss, decline, cancel.
    Cancel,
    /// Alt+1..9, Alt+0: the conversation at this index of the sidebar.
    Select(usize),
    NextConversation,
    PrevConversation,
    /// Alt+A: the next conversation with unread messages, mentions first.
    NextActive,
    ScrollUp(usize),
    ScrollDown(usize),
    PageUp,
    PageDown,
    Resize {
        width: u16,
        height: u16,
    },
    /// The clock, once a second (typing notices expire, notices fade).
    Tick(Timestamp),
    /// Ctrl+L: repaint the whole screen (after something else wrote on the terminal).
    Redraw,
    Quit,
    Net(NetEvent),
}

/// What an update asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start the network worker with this login.
    Connect(LoginPlan),
    Request(Request),
    Answer(Answer),
    /// Ring the terminal bell (a mention).
    Bell,
    /// Clear the terminal and paint everything again.
    Redraw,
    /// Close the connection and leave.
    Quit,
}

/// The keymap. `None`: the event means nothing here.
pub fn from_terminal(ev: TermEvent) -> Option<Action> {
    match ev {
        TermEvent::Key(k) if k.kind != KeyEventKind::Release => from_key(k),
        TermEvent::Mouse(m) => match m.kind {
            MouseEventKind::ScrollUp => Some(Action::ScrollUp(WHEEL_ROWS)),
            MouseEventKind::ScrollDown => Some(Action::ScrollDown(WHEEL_ROWS)),
            _ => None,
        },
        TermEvent::Paste(text) => Some(Action::Edit(EditOp::InsertStr(pasted(&text)))),
        TermEvent::Resize(width, height) => Some(Action::Resize { width, height }),
        _ => None,
    }
}

/// A paste goes into the one-line input: line breaks and tabs become spaces, and other
/// control characters are dropped (they would be sent, and drawn, as they are).
fn pasted(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

fn from_key(k: KeyEvent) -> Option<Action> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let alt = k.modifiers.contains(KeyModifiers::ALT);
    let edit = |op| Some(Action::Edit(op));
    match k.code {
        KeyCode::Char(c) if alt && !ctrl => match c {
            '1'..='9' => Some(Action::Select(c as usize - '1' as usize)),
            '0' => Some(Action::Select(9)),
            'a' | 'A' => Some(Action::NextActive),
            'b' => edit(EditOp::WordLeft),
            'f' => edit(EditOp::WordRight),
            _ => None,
        },
        KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
            'c' => Some(Action::Quit),
            'l' => Some(Action::Redraw),
            'n' => Some(Action::NextConversation),
            'p' => Some(Action::PrevConversation),
            'a' => edit(EditOp::Home),
            'e' => edit(EditOp::End),
            'b' => edit(EditOp::Left),
            'f' => edit(EditOp::Right),
            'h' => edit(EditOp::Backspace),
            'd' => edit(EditOp::Delete),
            'w' => edit(EditOp::DeleteWordBack),
            'u' => edit(EditOp::DeleteToStart),
            'k' => edit(EditOp::DeleteToEnd),
            _ => None,
        },
        KeyCode::Char(c) => edit(EditOp::Insert(c)),
        KeyCode::Left if alt => Some(Action::PrevConversation),
        KeyCode::Right if alt => Some(Action::NextConversation),
        KeyCode::Left if ctrl => edit(EditOp::WordLeft),
        KeyCode::Right if ctrl => edit(EditOp::WordRight),
        KeyCode::Left => edit(EditOp::Left),
        KeyCode::Right => edit(EditOp::Right),
        KeyCode::Home => edit(EditOp::Home),
        KeyCode::End => edit(EditOp::End),
        KeyCode::Backspace if alt || ctrl => edit(EditOp::DeleteWordBack),
        KeyCode::Backspace => edit(EditOp::Backspace),
        KeyCode::Delete => edit(EditOp::Delete),
        KeyCode::Up if k.modifiers.contains(KeyModifiers::SHIFT) => Some(Action::ScrollUp(1)),
        KeyCode::Down if k.modifiers.contains(KeyModifiers::SHIFT) => Some(Action::ScrollDown(1)),
        KeyCode::Up => Some(Action::HistoryPrev),
        KeyCode::Down => Some(Action::HistoryNext),
        KeyCode::PageUp => Some(Action::PageUp),
        KeyCode::PageDown => Some(Action::PageDown),
        KeyCode::Tab => Some(Action::Complete),
        KeyCode::Enter => Some(Action::Submit),
        KeyCode::Esc => Some(Action::Cancel),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Action> {
        from_terminal(TermEvent::Key(KeyEvent::new(code, modifiers)))
    }

    #[test]
    fn switching_keys() {
        assert_eq!(key(KeyCode::Char('1'), KeyModifiers::ALT), Some(Action::Select(0)));
        assert_eq!(key(KeyCode::Char('9'), KeyModifiers::ALT), Some(Action::Select(8)));
        assert_eq!(key(KeyCode::Char('a'), KeyModifiers::ALT), Some(Action::NextActive));
        assert_eq!(
            key(KeyCode::Char('n'), KeyModifiers::CONTROL),
            Some(Action::NextConversation)
        );
        assert_eq!(
            key(KeyCode::Char('p'), KeyModifiers::CONTROL),
            Some(Action::PrevConversation)
        );
        assert_eq!(key(KeyCode::Left, KeyModifiers::ALT), Some(Action::PrevConversation));
        assert_eq!(key(KeyCode::Right, KeyModifiers::ALT), Some(Action::NextConversation));
    }

    #[test]
    fn editing_keys() {
        assert_eq!(
            key(KeyCode::Char('W'), KeyModifiers::SHIFT),
            Some(Action::Edit(EditOp::Insert('W')))
        );
        assert_eq!(
            key(KeyCode::Char('w'), KeyModifiers::CONTROL),
            Some(Action::Edit(EditOp::DeleteWordBack))
        );
        assert_eq!(
            key(KeyCode::Char('u'), KeyModifiers::CONTROL),
            Some(Action::Edit(EditOp::DeleteToStart))
        );
        assert_eq!(key(KeyCode::Home, KeyModifiers::NONE), Some(Action::Edit(EditOp::Home)));
        assert_eq!(key(KeyCode::Up, KeyModifiers::NONE), Some(Action::HistoryPrev));
        assert_eq!(key(KeyCode::Tab, KeyModifiers::NONE), Some(Action::Complete));
        let paste = from_terminal(TermEvent::Paste("a\r\nb\tc\u{1b}[31m".into()));
        assert_eq!(paste, Some(Action::Edit(EditOp::InsertStr("a b c[31m".into()))));
    }
}
