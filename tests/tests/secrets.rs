//! No secret in any log, even at trace level: the server and every client run with everything
//! logged (`RUST_LOG=trace` for the server through the harness's `IM_TEST_SERVER_LOG`,
//! `IM_LOG=trace` for `im-client`) through register, password login, a failed login, sends,
//! listen, history, passwd, keygen, key add, key login, ticket resumption and logout; then the
//! server's log and every client's stdout and stderr are searched for the passwords, every
//! ticket secret the clients stored (hex, base64, and as a Rust byte array), the PEM bodies of
//! the user key and the host key, and password hashes. And the files that hold secrets are
//! private: key files and tickets 0600, their folders and the data directory 0700.

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use harness::*;

const NEW_PASSWORD: &str = "a brand new passphrase 42";
const WRONG_PASSWORD: &str = "a wrong guess 1234";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Every ticket secret stored in `home` now, as bytes.
fn ticket_secrets(home: &Path) -> Vec<Vec<u8>> {
    files_under(&home.join("tickets"))
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let hex = text
                .lines()
                .find_map(|l| l.strip_prefix("secret = "))?
                .trim()
                .to_owned();
            Some(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect(),
            )
        })
        .collect()
}

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// The ways a secret's bytes could show up in a log line.
fn encodings(secret: &[u8]) -> Vec<String> {
    const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        hex[..hex.len() / 2].to_owned(),
        hex[hex.len() / 2..].to_owned(),
        hex.to_uppercase(),
        base64(secret, STANDARD, true),
        base64(secret, STANDARD, false),
        base64(secret, URL_SAFE, false),
        format!("{secret:?}"),
        format!("{:?}", &secret[..8]),
    ]
}

/// The base64 lines of a PEM file's body.
fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_secret_is_logged_at_trace_level_and_secret_files_are_private() {
    // SAFETY: set before any thread of this test binary reads the environment (this is its
    // only test).
    unsafe { std::env::set_var("IM_TEST_SERVER_LOG", "trace") };
    let server = Server::start();
    let mut output = String::new();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    let mut homes: Vec<PathBuf> = Vec::new();
    let mut run = |c: &Client, args: &[&str], env: &[(&str, &str)], code: i32| {
        let mut cmd = c.command(args).env("IM_LOG", "trace").env("RUST_LOG", "trace");
        for (k, v) in env {
            cmd = if v.is_empty() { cmd.env_remove(k) } else { cmd.env(k, v) };
        }
        let r = cmd.run().code_is(code);
        output.push_str(&r.stdout());
        output.push_str(&r.stderr());
        secrets.extend(ticket_secrets(&c.home));
        if !homes.contains(&c.home) {
            homes.push(c.home.clone());
        }
    };
    let alice = server.client("alice");
    let bob = server.client("bob");
    let no_password = [("IM_PASSWORD", "")];
    run(&alice, &["register"], &[], 0);
    run(&bob, &["register"], &[], 0);
    run(&alice, &["whoami"], &no_password, 0);
    run(&alice, &["send", "bob", "hello bob"], &no_password, 0);
    run(&bob, &["listen", "--count", "1", "--timeout", "20"], &no_password, 0);
    run(&bob, &["history", "alice"], &no_password, 0);
    let phone = alice.device("phone");
    run(&phone, &["whoami"], &[], 0);
    run(
        &alice.device("guess"),
        &["whoami"],
        &[("IM_PASSWORD", WRONG_PASSWORD)],
        4,
    );
    run(&alice, &["passwd"], &[("IM_NEW_PASSWORD", NEW_PASSWORD)], 0);
    run(&phone, &["whoami"], &[("IM_PASSWORD", NEW_PASSWORD)], 0);
    run(&alice, &["keygen", "--bits", "2048"], &[], 0);
    run(&alice, &["key", "add"], &no_password, 0);
    let key = alice.home.join("user_key.pem");
    let bot = alice.device("bot");
    run(&bot, &["--key", key.to_str().unwrap(), "whoami"], &no_password, 0);
    run(&bot, &["whoami"], &no_password, 0);
    run(&phone, &["logout"], &no_password, 0);
    run(&alice, &["--json", "devices"], &no_password, 0);

    let server_log = server.log();
    assert!(
        server_log.contains("TRACE") && output.contains("TRACE"),
        "trace logging is not on, so this test would prove nothing"
    );
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 5, "only {} ticket secrets seen", secrets.len());
    let mut needles: Vec<(String, String)> = Vec::new();
    for p in [
        alice.password.as_str(),
        bob.password.as_str(),
        NEW_PASSWORD,
        WRONG_PASSWORD,
    ] {
        needles.push((format!("password {p:?}"), p.to_owned()));
    }
    for (i, s) in secrets.iter().enumerate() {
        needles.extend(encodings(s).into_iter().map(|e| (format!("ticket secret {i}"), e)));
    }
    for line in pem_body_lines(&key) {
        needles.push(("the user key's PEM body".into(), line));
    }
    for line in pem_body_lines(&server.data_dir().join("host_key.pem")) {
        needles.push(("the host key's PEM body".into(), line));
    }
    needles.push(("a password hash".into(), "$argon2".into()));
    for (what, needle) in &needles {
        for (name, text) in [("the server log", &server_log), ("the clients' output", &output)] {
            if let Some(at) = text.find(needle.as_str()) {
                let line = text[..at].lines().count();
                panic!("{what} ({needle:?}) is in {name}, line {line}");
            }
        }
    }

    // Private files.
    let data = server.data_dir();
    assert_eq!(mode(&data), 0o700, "the data directory");
    for f in ["host_key.pem", "accounts.db", "accounts.db-wal", "accounts.db-shm"] {
        if data.join(f).exists() {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
    }
    assert_eq!(mode(&key), 0o600, "the user key");
    for home in &homes {
        let tickets = home.join("tickets");
        if tickets.exists() {
            assert_eq!(mode(&tickets), 0o700, "{}", tickets.display());
        }
        for f in files_under(&tickets) {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    println!(
        "searched {} bytes of server log and {} bytes of client output for {} needles",
        server_log.len(),
        output.len(),
        needles.len()
    );
}
