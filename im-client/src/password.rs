//! Where a password comes from when it is not typed at a prompt: the environment variable
//! [`PASSWORD_ENV`] or the first line of a file, and the local checks a new password must
//! pass. Shared by every front end (the `im-client` command, `im-tui`), so that both read
//! the same variable and the same file format.

use std::path::Path;

use im_proto::limits::{MAX_PASSWORD, MIN_PASSWORD_CHARS};
use im_proto::msg::Password;
use zeroize::Zeroizing;

use crate::error::Error;

/// The environment variable holding the password.
pub const PASSWORD_ENV: &str = "IM_PASSWORD";

/// The password in the environment variable `var`, if it is set.
pub fn from_env(var: &str) -> Option<Password> {
    std::env::var(var).ok().map(Password::new)
}

/// The first line of a password file (without its line ending).
pub fn read_file(path: &Path) -> Result<Password, Error> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::local("cannot read password file", path, e))?);
    let line = text.lines().next().unwrap_or("");
    Ok(Password::new(line.to_owned()))
}

/// Checks a new password against the protocol's limits before it is sent.
pub fn check_new(p: &Password) -> Result<(), Error> {
    let s = p.expose();
    if s.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::Refused(format!(
            "the password is too short: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if s.len() > MAX_PASSWORD {
        return Err(Error::Refused(format!(
            "the password is too long: at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_give_their_first_line_and_new_passwords_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "correct horse\r\nsecond\n").unwrap();
        assert_eq!(read_file(&path).unwrap().expose(), "correct horse");
        assert_eq!(read_file(&dir.path().join("none")).unwrap_err().exit_code(), 8);
        assert!(check_new(&Password::from("short")).is_err());
        assert!(check_new(&Password::from("long enough")).is_ok());
        assert!(check_new(&Password::new("x".repeat(MAX_PASSWORD + 1))).is_err());
    }
}
