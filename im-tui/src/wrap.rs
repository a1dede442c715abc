//! Display widths and word wrapping of text that has already been neutralised
//! ([`crate::sanitize`]).
//!
//! Widths come from the grapheme cluster, not the code point: `e` + U+0301 is one cell, a CJK
//! ideograph or an emoji two. The width of a grapheme is ratatui's own [`CellWidth`] (the
//! `unicode-width` crate's width, plus ratatui's correction for halfwidth sound marks), so a
//! row that wrapping says fits is exactly a row the buffer draws without clipping.

use ratatui::buffer::CellWidth;
use unicode_segmentation::UnicodeSegmentation;

/// Cells one grapheme takes on screen. Zero for what the buffer drops (control characters,
/// lone zero-width characters).
pub fn grapheme_width(g: &str) -> usize {
    if g.chars().any(char::is_control) {
        return 0;
    }
    usize::from(g.cell_width())
}

/// Cells a string takes on screen.
pub fn width(s: &str) -> usize {
    s.graphemes(true).map(grapheme_width).sum()
}

/// Cuts `s` to at most `max` cells, ending in `…` when something was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for g in s.graphemes(true) {
        let w = grapheme_width(g);
        if used + w > max - 1 {
            break;
        }
        out.push_str(g);
        used += w;
    }
    out.push('…');
    out
}

/// Splits one line of text (no newlines) into rows: the first at most `first` cells wide,
/// the others at most `rest`. Rows break after a space when there is one on the row, else
/// between graphemes (which is also how CJK text breaks). A wide grapheme never straddles
/// two rows; one wider than a whole row gets a row of its own. Zero-width graphemes are
/// dropped, as the buffer would drop them. Always returns at least one row.
pub fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut row_w = 0usize;
    // Byte offset in `row` just after the last space, and the width up to there.
    let mut brk: Option<(usize, usize)> = None;
    let limit = |rows: &Vec<String>| if rows.is_empty() { first.max(1) } else { rest.max(1) };
    for g in text.graphemes(true) {
        let w = grapheme_width(g);
        if w == 0 {
            continue;
        }
        loop {
            let max = limit(&rows);
            if row_w + w <= max {
                row.push_str(g);
                row_w += w;
                if g == " " {
                    brk = Some((row.len(), row_w));
                }
                break;
            }
            if g == " " {
                // The space ends the row and is not carried over.
                rows.push(row.trim_end_matches(' ').to_owned());
                row.clear();
                row_w = 0;
                brk = None;
                break;
            }
            match brk.take() {
                Some((at, at_w)) if at < row.len() => {
                    let tail = row.split_off(at);
                    rows.push(row.trim_end_matches(' ').to_owned());
                    row = tail;
                    row_w -= at_w;
                }
                _ if row.is_empty() => {
                    // Wider than a whole row: it stands alone, clipped when drawn.
                    row.push_str(g);
                    row_w = w;
                    break;
                }
                _ => {
                    rows.push(std::mem::take(&mut row).trim_end_matches(' ').to_owned());
                    row_w = 0;
                }
            }
        }
    }
    rows.push(row);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(rows: &[String]) -> Vec<usize> {
        rows.iter().map(|r| width(r)).collect()
    }

    #[test]
    fn widths_count_cells_not_code_points() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("日本語"), 6);
        assert_eq!(width("e\u{301}te\u{301}"), 3, "combining accents take no cell");
        assert_eq!(width("🦀"), 2);
        assert_eq!(width("👩‍🔬"), 2, "a ZWJ sequence is one grapheme");
        assert_eq!(width("a\u{7}b"), 2, "control characters take nothing");
    }

    #[test]
    fn words_wrap_at_spaces() {
        assert_eq!(wrap("the quick brown fox", 10, 10), ["the quick", "brown fox"]);
        assert_eq!(wrap("hello", 10, 10), ["hello"]);
        assert_eq!(wrap("", 10, 10), [""]);
        assert_eq!(wrap("a  b", 2, 2), ["a", "b"]);
    }

    #[test]
    fn long_words_break_between_graphemes() {
        assert_eq!(wrap("abcdefghij", 4, 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("ab cdefghij", 4, 4), ["ab", "cdef", "ghij"]);
    }

    #[test]
    fn first_row_and_later_rows_have_their_own_widths() {
        assert_eq!(wrap("aaa bbb ccc ddd", 3, 7), ["aaa", "bbb ccc", "ddd"]);
    }

    #[test]
    fn wide_graphemes_never_straddle_a_row() {
        let rows = wrap("日本語のテキスト", 5, 5);
        assert_eq!(rows, ["日本", "語の", "テキ", "スト"]);
        assert!(widths(&rows).iter().all(|&w| w <= 5));
        let rows = wrap("ab🦀cd🦀", 3, 3);
        assert_eq!(rows, ["ab", "🦀c", "d🦀"]);
    }

    #[test]
    fn combining_characters_stay_with_their_base() {
        let rows = wrap("cafe\u{301} cafe\u{301}", 4, 4);
        assert_eq!(rows, ["cafe\u{301}", "cafe\u{301}"]);
        let rows = wrap("e\u{301}e\u{301}e\u{301}", 2, 2);
        assert_eq!(rows, ["e\u{301}e\u{301}", "e\u{301}"]);
    }

    #[test]
    fn a_grapheme_wider_than_the_row_gets_its_own_row() {
        assert_eq!(wrap("a日b", 1, 1), ["a", "日", "b"]);
        assert_eq!(wrap("abc", 0, 0), ["a", "b", "c"]);
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        assert_eq!(truncate("日本語", 4), "日…");
        assert_eq!(truncate("abc", 0), "");
    }
}
