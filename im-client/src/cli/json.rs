//! A tiny JSON-lines writer: one flat object per line, fields in the order written, so the
//! output is stable byte for byte (the README documents it and tests pin it).

use std::fmt::Write;

/// One flat JSON object, built field by field: `JsonLine::new("sent").u64("id", 5).finish()`.
pub struct JsonLine(String);

impl JsonLine {
    /// Starts an object with its `type` field.
    pub fn new(ty: &str) -> Self {
        let mut s = String::with_capacity(96);
        s.push_str("{\"type\":");
        escape_into(&mut s, ty);
        JsonLine(s)
    }

    fn key(&mut self, k: &str) {
        self.0.push(',');
        escape_into(&mut self.0, k);
        self.0.push(':');
    }

    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        escape_into(&mut self.0, v);
        self
    }

    /// A string, or `null`.
    pub fn opt_str(mut self, k: &str, v: Option<&str>) -> Self {
        match v {
            Some(v) => self.str(k, v),
            None => {
                self.key(k);
                self.0.push_str("null");
                self
            }
        }
    }

    pub fn u64(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    /// A number, or `null`.
    pub fn opt_u64(mut self, k: &str, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.u64(k, v),
            None => {
                self.key(k);
                self.0.push_str("null");
                self
            }
        }
    }

    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped.
fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0 controls must be escaped; DEL, C1 controls and the line separators are
            // escaped too, so a raw line is safe to show in a terminal or a JS context.
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_flat_objects_in_order() {
        let line = JsonLine::new("x")
            .str("s", "a\"b\\c\nd\u{1}\u{2028}é")
            .u64("n", 9_007_199_254_740_991)
            .bool("b", false)
            .opt_str("o", None)
            .opt_u64("m", Some(1))
            .finish();
        assert_eq!(
            line,
            r#"{"type":"x","s":"a\"b\\c\nd\u0001\u2028é","n":9007199254740991,"b":false,"o":null,"m":1}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["s"], "a\"b\\c\nd\u{1}\u{2028}é");
    }
}
