//! Does a message mention me? People write `alice`, `Alice:`, `@alice` or `alice.` at the end
//! of a sentence, but `malice` and `alice.b` (another user) are not mentions.

/// Characters that may continue a user name (see `im_proto::name`).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Whether `text` names the user `me` (a canonical, lower-case user name) as a whole word,
/// ignoring ASCII case.
pub fn mentions(text: &str, me: &str) -> bool {
    if me.is_empty() {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(me) {
        let start = from + pos;
        let end = start + me.len();
        let before_ok = lower[..start].chars().next_back().is_none_or(|c| !name_char(c));
        let mut after = lower[end..].chars();
        let after_ok = match after.next() {
            None => true,
            // A trailing dot ends a sentence unless a name goes on after it.
            Some('.') => after.next().is_none_or(|c| !name_char(c)),
            Some(c) => !name_char(c),
        };
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
        while !lower.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_in_any_case() {
        for yes in [
            "alice",
            "Alice: hi",
            "hi @alice",
            "ping ALICE.",
            "thanks alice!",
            "(alice)",
            "alice, look",
            "日本alice",
        ] {
            assert!(mentions(yes, "alice"), "{yes:?}");
        }
        for no in ["malice", "alice.b said", "alice_2", "alicebob", "bob", "", "ali ce"] {
            assert!(!mentions(no, "alice"), "{no:?}");
        }
        assert!(mentions("malice and alice", "alice"), "a later occurrence counts");
        assert!(!mentions("anything", ""));
    }
}
