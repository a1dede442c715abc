//! The `im-client` command run as a process against the fake server in `common`: exit codes,
//! JSON lines, host-key trust without a terminal, the home's files. (Against the real server
//! binary: the `tests` crate.)

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use im_proto::msg::{ErrorCode, ServerMsg};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    fn error(&self) -> Value {
        let line = self.stderr.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("stderr {:?}: {e}", self.stderr))
    }
}

fn command(home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_im-client"));
    cmd.args(args)
        .env("IM_HOME", home)
        .env_remove("IM_SERVER")
        .env_remove("IM_USER")
        .env_remove("IM_PASSWORD")
        .env_remove("IM_NEW_PASSWORD")
        .env_remove("IM_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs the command with no terminal: stdin is `input` or empty, stdout and stderr piped.
async fn im(home: &Path, args: &[&str], env: &[(&str, &str)], input: Option<&str>) -> Run {
    let mut cmd = command(home, args);
    cmd.envs(env.iter().copied());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command ends")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

const PW: (&str, &str) = ("IM_PASSWORD", PASSWORD);

#[tokio::test]
async fn first_send_pins_remembers_and_later_commands_need_nothing() {
    let server = FakeServer::start(host_key()).await;
    let home = tempfile::tempdir().unwrap();
    let addr = server.addr.key();

    // Unknown host, no terminal: refused with the fingerprint, before any password is sent.
    let r = im(
        home.path(),
        &["--json", "-s", &addr, "-u", "alice", "send", "bob", "hi"],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    let e = r.error();
    assert_eq!(
        (e["type"].as_str(), e["exit"].as_u64(), e["code"].as_str()),
        (Some("error"), Some(5), Some("host_key_unknown"))
    );
    assert!(e["message"].as_str().unwrap().contains(&host_key().fingerprint()));
    assert!(server.state().logins.is_empty());

    // --accept-new: pinned, logged in by password, message stored.
    let r = im(
        home.path(),
        &[
            "send",
            "bob",
            "hello",
            "world",
            "--json",
            "-s",
            &addr,
            "-u",
            "Alice",
            "--accept-new",
            "--client-id",
            "c-1",
        ],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = r.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (
            lines[0]["type"].as_str(),
            lines[0]["id"].as_u64(),
            lines[0]["client_id"].as_str()
        ),
        (Some("sent"), Some(101), Some("c-1"))
    );
    assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert_eq!(config, format!("server = \"{addr}\"\nuser = \"alice\"\n"));
    assert!(
        std::fs::read_to_string(home.path().join("known_hosts"))
            .unwrap()
            .contains(&host_key().fingerprint())
    );

    // No server, user or password given: all from the home (the ticket logs in).
    let r = im(home.path(), &["whoami", "--json"], &[], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let w = &r.json_lines()[0];
    assert_eq!(
        (w["type"].as_str(), w["user"].as_str(), w["server"].as_str()),
        (Some("whoami"), Some("alice"), Some(addr.as_str()))
    );
    assert_eq!(w["fingerprint"].as_str(), Some(host_key().fingerprint().as_str()));
    assert!(w["device"].as_u64().unwrap() > 0);

    // Stdin, line by line.
    let r = im(
        home.path(),
        &["send", "--lines", "#rust"],
        &[],
        Some("one\n\ntwo\nthree\n"),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
    assert_eq!(
        server.state().logins,
        ["password:alice", "ticket:alice", "ticket:alice"]
    );
    let sends = server.state().sends.clone();
    assert_eq!(
        sends[1..],
        [
            ("#rust".into(), "one".into()),
            ("#rust".into(), "two".into()),
            ("#rust".into(), "three".into())
        ]
    );

    // Refusals: by the server (no such user), and locally (too long, never sent).
    let r = im(home.path(), &["--json", "send", "nobody", "hi"], &[], None).await;
    assert_eq!((r.code, r.error()["code"].as_str()), (6, Some("no_such_user")));
    let long = "x".repeat(8193);
    let r = im(home.path(), &["--json", "send", "bob", &long], &[], None).await;
    assert_eq!((r.code, r.error()["code"].as_str()), (6, Some("refused")));
    assert_eq!(server.state().sends.len(), 4);

    // The pinned fingerprint, without a connection.
    let r = im(home.path(), &["fingerprint", "--json"], &[], None).await;
    let f = &r.json_lines()[0];
    assert_eq!(
        (f["fingerprint"].as_str(), f["pinned"].as_bool()),
        (Some(host_key().fingerprint().as_str()), Some(true))
    );

    // Logout deletes the ticket: the next command needs a password again.
    let r = im(home.path(), &["logout"], &[], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = im(home.path(), &["--json", "whoami"], &[], None).await;
    assert_eq!(
        (r.code, r.error()["code"].as_str()),
        (4, Some("no_credentials")),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn listen_prints_and_acknowledges_then_counts_and_times_out() {
    let server = FakeServer::start(host_key()).await;
    server.state().pushes = vec![
        ServerMsg::Message(chat(1, "bob", "alice", "one")),
        ServerMsg::TypingNotice {
            from: "bob".parse().unwrap(),
            to: "alice".parse().unwrap(),
        },
        ServerMsg::Message(chat(2, "carol", "#rust", "two")),
    ];
    let home = tempfile::tempdir().unwrap();
    let addr = server.addr.key();
    let base = ["-s", addr.as_str(), "-u", "alice", "--accept-new", "--json"];

    let args: Vec<&str> = base.iter().copied().chain(["listen", "--count", "2"]).collect();
    let r = im(home.path(), &args, &[PW], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines = r.json_lines();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["message", "typing", "message"]);
    assert_eq!(
        (
            lines[0]["to"].as_str(),
            lines[0]["text"].as_str(),
            lines[0]["id"].as_u64()
        ),
        (Some("alice"), Some("one"), Some(1))
    );
    assert_eq!((lines[2]["room"].as_str(), lines[2].get("to")), (Some("#rust"), None));
    assert_eq!(server.state().acks, [1, 2]);

    // --timeout before --count: exit 1; --timeout alone: exit 0.
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["listen", "--count", "5", "--timeout", "0.5"])
        .collect();
    let r = im(home.path(), &args, &[], None).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json_lines().iter().filter(|l| l["type"] == "message").count(), 2);
    let args: Vec<&str> = base.iter().copied().chain(["listen", "--timeout", "0.3"]).collect();
    assert_eq!(im(home.path(), &args, &[], None).await.code, 0);
}

#[tokio::test]
async fn listen_with_a_closed_stdout_exits_0_and_acknowledges_nothing() {
    let server = FakeServer::start(host_key()).await;
    server.state().pushes = vec![ServerMsg::Message(chat(1, "bob", "alice", "one"))];
    let home = tempfile::tempdir().unwrap();
    let addr = server.addr.key();
    let mut cmd = command(
        home.path(),
        &["-s", &addr, "-u", "alice", "--accept-new", "listen", "--timeout", "5"],
    );
    cmd.env("IM_PASSWORD", PASSWORD);
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(server.state().acks.is_empty());
}

#[tokio::test]
async fn a_changed_host_key_is_refused_with_both_fingerprints_and_the_fix() {
    let server = FakeServer::start(other_host_key()).await;
    let home = tempfile::tempdir().unwrap();
    let addr = server.addr.key();
    std::fs::write(
        home.path().join("known_hosts"),
        format!("# pins\n{addr} {}\n", host_key().fingerprint()),
    )
    .unwrap();
    let r = im(
        home.path(),
        &["-s", &addr, "-u", "alice", "--accept-new", "whoami"],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    for needle in [
        host_key().fingerprint(),
        other_host_key().fingerprint(),
        "line 2".into(),
        "sed -i '2d'".into(),
    ] {
        assert!(r.stderr.contains(&needle), "{needle} not in {}", r.stderr);
    }
    // A wrong expected fingerprint is refused too; the right one is pinned.
    let home = tempfile::tempdir().unwrap();
    let r = im(
        home.path(),
        &[
            "-s",
            &addr,
            "-u",
            "alice",
            "--trust-fingerprint",
            "SHA256:nope",
            "whoami",
        ],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    let fp = other_host_key().fingerprint();
    let r = im(
        home.path(),
        &["-s", &addr, "-u", "alice", "--trust-fingerprint", &fp, "whoami"],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Unpinned: `fingerprint` fetches it.
    let home = tempfile::tempdir().unwrap();
    let r = im(home.path(), &["-s", &addr, "fingerprint"], &[], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&fp) && r.stdout.contains("not pinned"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn usage_auth_connect_and_rate_limit_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let r = im(home.path(), &["--json", "whoami"], &[], None).await;
    assert_eq!((r.code, r.error()["code"].as_str()), (2, Some("usage")));
    let r = im(home.path(), &["send"], &[], None).await;
    assert_eq!(r.code, 2);
    let r = im(
        home.path(),
        &["--json", "-s", "127.0.0.1:1", "-u", "alice", "whoami"],
        &[PW],
        None,
    )
    .await;
    assert_eq!((r.code, r.error()["code"].as_str()), (3, Some("connect")));

    let server = FakeServer::start(host_key()).await;
    let addr = server.addr.key();
    let r = im(
        home.path(),
        &["--json", "-s", &addr, "-u", "alice", "--accept-new", "whoami"],
        &[("IM_PASSWORD", "wrong-one")],
        None,
    )
    .await;
    assert_eq!((r.code, r.error()["code"].as_str()), (4, Some("auth_failed")));
    let r = im(
        home.path(),
        &["--json", "-s", &addr, "-u", "alice", "whoami"],
        &[],
        None,
    )
    .await;
    assert_eq!((r.code, r.error()["code"].as_str()), (4, Some("no_credentials")));
    let pwfile = home.path().join("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let r = im(
        home.path(),
        &[
            "-s",
            &addr,
            "-u",
            "alice",
            "whoami",
            "--password-file",
            pwfile.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = im(
        home.path(),
        &[
            "--json",
            "-s",
            &addr,
            "-u",
            "bob",
            "whoami",
            "--password-file",
            "/nonexistent/pw",
        ],
        &[],
        None,
    )
    .await;
    assert_eq!((r.code, r.error()["code"].as_str()), (8, Some("local")));

    server.state().reject = Some(im_proto::handshake::Reject {
        code: ErrorCode::RateLimited.code(),
        retry_after_ms: 2500,
        text: "slow down".into(),
    });
    let r = im(home.path(), &["--json", "whoami"], &[], None).await;
    let e = r.error();
    assert_eq!(
        (r.code, e["code"].as_str(), e["retry_after_ms"].as_u64()),
        (7, Some("rate_limited"), Some(2500))
    );
}

#[tokio::test]
async fn register_remembers_the_server_and_user() {
    let server = FakeServer::start(host_key()).await;
    let home = tempfile::tempdir().unwrap();
    let addr = server.addr.key();
    let r = im(
        home.path(),
        &["-s", &addr, "-u", "Carol", "--accept-new", "--json", "register"],
        &[("IM_PASSWORD", "short")],
        None,
    )
    .await;
    assert_eq!(r.code, 6, "a too short password is refused locally: {}", r.stderr);
    let r = im(
        home.path(),
        &["-s", &addr, "-u", "Carol", "--accept-new", "--json", "register"],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json_lines()[0]["type"], "registered");
    assert_eq!(server.state().logins, ["register:carol"]);
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert_eq!(config, format!("server = \"{addr}\"\nuser = \"carol\"\n"));
    assert!(home.path().join("tickets").read_dir().unwrap().count() == 1);
}

#[tokio::test]
async fn keygen_writes_a_private_key_once() {
    let home = tempfile::tempdir().unwrap();
    let r = im(home.path(), &["keygen", "--bits", "2048", "--json"], &[], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let k = &r.json_lines()[0];
    assert_eq!(k["type"], "key");
    assert!(k["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    let path = home.path().join("user_key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let key = im_client::home::load_key(&path).unwrap();
    assert_eq!(k["fingerprint"].as_str(), Some(key.fingerprint().as_str()));
    let r = im(home.path(), &["keygen", "--bits", "2048"], &[], None).await;
    assert_eq!(r.code, 8, "never overwrites: {}", r.stderr);
}

#[tokio::test]
async fn key_login_after_key_add() {
    let server = FakeServer::start(host_key()).await;
    let home = tempfile::tempdir().unwrap();
    let addr = server.addr.key();
    let key_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../im-proto/tests/data/user_key.pem");
    let key_file = key_file.to_str().unwrap();
    // The fake server takes any key once told to; `key add` logs in by password.
    let r = im(
        home.path(),
        &[
            "-s",
            &addr,
            "-u",
            "alice",
            "--accept-new",
            "--key",
            key_file,
            "key",
            "add",
        ],
        &[PW],
        None,
    )
    .await;
    assert_eq!(r.code, 6, "the fake server does not implement AddUserKey: {}", r.stderr);
    server.state().user_key_der = Some(user_key().public_der().to_vec());
    std::fs::remove_dir_all(home.path().join("tickets")).unwrap();
    let r = im(home.path(), &["--json", "--key", key_file, "whoami"], &[], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(server.state().logins, ["password:alice", "key:alice"]);
}
