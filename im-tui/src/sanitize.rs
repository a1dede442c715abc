//! Text from the network is untrusted: a message, topic, status text or error could carry
//! escape sequences that move the cursor or retitle the terminal, or bidirectional overrides
//! that make text read differently from how it is stored (Trojan Source). Everything from the
//! server passes through here before it is drawn.

/// Replaces what must never reach the terminal: C0 and C1 controls (ESC among them), DEL,
/// and the bidi embedding, override and isolate characters and the directional marks.
const REPLACEMENT: char = '\u{fffd}';

fn is_dangerous(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// One line of safe text: tabs become a space, carriage returns vanish, newlines become a
/// space (for topics, names, status texts and errors, which are shown on one line), and
/// dangerous characters become U+FFFD.
pub fn line(s: &str) -> String {
    s.chars()
        .filter(|&c| c != '\r')
        .map(|c| match c {
            '\n' | '\t' => ' ',
            c if is_dangerous(c) => REPLACEMENT,
            c => c,
        })
        .collect()
}

/// A message text as safe lines: split at newlines, each line made safe like [`line`].
pub fn lines(s: &str) -> Vec<String> {
    s.split('\n').map(line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bidi_overrides_are_neutralised() {
        assert_eq!(line("a\u{1b}[2Jb"), "a\u{fffd}[2Jb");
        assert_eq!(line("x\u{202e}y\u{9b}z\u{7f}"), "x\u{fffd}y\u{fffd}z\u{fffd}");
        assert_eq!(line("\u{2066}admin\u{2069}"), "\u{fffd}admin\u{fffd}");
        assert_eq!(line("tab\there\r"), "tab here");
        assert_eq!(line("one\ntwo"), "one two");
    }

    #[test]
    fn messages_keep_their_lines() {
        assert_eq!(lines("one\r\ntwo\n\u{7}"), ["one", "two", "\u{fffd}"]);
        assert_eq!(lines("日本語 e\u{301}"), ["日本語 e\u{301}"]);
    }
}
