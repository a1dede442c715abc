//! User and room names: the only identifiers people type, so the rules are strict and simple.
//!
//! Names are folded to ASCII lower case before they are checked, so `Alice` and `alice` are the
//! same account. Anything outside the rule is refused with an error that says the rule, rather
//! than being silently mangled into something else.

use std::fmt;

use crate::limits::{MAX_ROOM_NAME, MAX_USER_NAME};

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "user names are 1 to {MAX_USER_NAME} characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit: {0:?}"
    )]
    User(String),
    #[error(
        "room names are '#' and 1 to {MAX_ROOM_NAME} characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit: {0:?}"
    )]
    Room(String),
}

fn valid_body(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
}

/// A user name, already case-folded and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let folded = s.to_ascii_lowercase();
        if valid_body(&folded, MAX_USER_NAME) {
            Ok(UserName(folded))
        } else {
            Err(NameError::User(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room name including its leading `#`, already case-folded and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let folded = s.to_ascii_lowercase();
        match folded.strip_prefix('#') {
            Some(body) if valid_body(body, MAX_ROOM_NAME) => Ok(RoomName(folded)),
            _ => Err(NameError::Room(s.chars().take(80).collect())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a message goes: a user (direct message) or a room. On the wire it is one name
/// string; the leading `#` tells them apart, exactly as users type them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    User(UserName),
    Room(RoomName),
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.starts_with('#') {
            RoomName::parse(s).map(Target::Room)
        } else {
            UserName::parse(s).map(Target::User)
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Target::User(u) => u.as_str(),
            Target::Room(r) => r.as_str(),
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
    )*};
}
display_as_str!(UserName, RoomName, Target);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_fold_and_check() {
        assert_eq!(UserName::parse("Alice").unwrap().as_str(), "alice");
        assert!(UserName::parse("a").is_ok());
        assert!(UserName::parse("0.b_c-d").is_ok());
        assert!(UserName::parse(&"a".repeat(32)).is_ok());
        for bad in ["", "_a", ".a", "-a", "a b", "é", "#a", &"a".repeat(33), "a\0"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn room_names_fold_and_check() {
        assert_eq!(RoomName::parse("#Rust").unwrap().as_str(), "#rust");
        assert!(RoomName::parse(&format!("#{}", "r".repeat(64))).is_ok());
        for bad in ["rust", "#", "##a", "#-a", &format!("#{}", "r".repeat(65))] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets_split_on_hash() {
        assert_eq!(
            Target::parse("#a").unwrap(),
            Target::Room(RoomName::parse("#a").unwrap())
        );
        assert_eq!(Target::parse("B").unwrap(), Target::User(UserName::parse("b").unwrap()));
    }
}
