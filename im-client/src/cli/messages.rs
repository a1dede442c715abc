//! Messaging commands: send, listen, history.

use std::io::Read;
use std::time::Duration;

use futures_util::StreamExt;
use im_client::{Error, Event, exit_code};
use im_proto::limits::{MAX_CLIENT_ID, MAX_TEXT};
use im_proto::msg::{MessageId, is_valid_client_id};
use tokio::time::{Instant, sleep_until};

use super::context::{Context, Login, parse_target};
use super::error::CliError;
use super::json::JsonLine;
use super::output::{message_human, message_json, sent_human, sent_json};
use super::{HistoryArgs, ListenArgs, SendArgs};

/// Sends at most this many messages before waiting for the first `Sent`.
const SEND_WINDOW: usize = 32;

/// The texts to send: the arguments joined by spaces, else stdin (whole, less one trailing
/// newline, or line by line with `--lines`).
pub fn texts(args: &SendArgs, stdin: impl FnOnce() -> Result<String, CliError>) -> Result<Vec<String>, CliError> {
    let texts: Vec<String> = if !args.text.is_empty() {
        vec![args.text.join(" ")]
    } else {
        let input = stdin()?;
        if args.lines {
            input
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            let t = input
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&input);
            if t.is_empty() { vec![] } else { vec![t.to_owned()] }
        }
    };
    if texts.is_empty() && !args.lines {
        return Err(CliError::usage(
            "nothing to send: give the text as arguments or on stdin",
        ));
    }
    if let Some(t) = texts.iter().find(|t| t.len() > MAX_TEXT) {
        return Err(Error::Refused(format!(
            "a message of {} bytes is too long: at most {MAX_TEXT} bytes",
            t.len()
        ))
        .into());
    }
    Ok(texts)
}

/// One client id per message: `ID` for a single message, `ID-1`, `ID-2`, … for several; a
/// random base when none is given.
pub fn client_ids(base: Option<&str>, n: usize) -> Result<Vec<String>, CliError> {
    let base = match base {
        Some(b) => b.to_owned(),
        None => hex::encode(rand::random::<[u8; 12]>()),
    };
    let ids: Vec<String> = if n == 1 {
        vec![base]
    } else {
        (1..=n).map(|i| format!("{base}-{i}")).collect()
    };
    if let Some(bad) = ids.iter().find(|id| !is_valid_client_id(id)) {
        return Err(CliError::usage(format!(
            "invalid client id {bad:?}: 1 to {MAX_CLIENT_ID} printable ASCII characters without spaces"
        )));
    }
    Ok(ids)
}

pub async fn send(ctx: &Context, args: SendArgs) -> Result<u8, CliError> {
    let to = parse_target(&args.to)?;
    let texts = texts(&args, || {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::input("standard input", e))?;
        Ok(s)
    })?;
    let ids = client_ids(args.client_id.as_deref(), texts.len())?;
    if texts.is_empty() {
        return Ok(exit_code::SUCCESS);
    }
    ctx.with_client(Login::Normal, async |client, _| {
        let mut replies = futures_util::stream::iter(texts.iter().zip(&ids))
            .map(|(text, id)| client.send(&to, text, id, args.me))
            .buffered(SEND_WINDOW);
        while let Some(sent) = replies.next().await {
            let sent = sent?;
            ctx.out.emit(|| sent_json(&sent), || sent_human(&sent))?;
        }
        Ok(())
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

pub async fn listen(ctx: &Context, args: ListenArgs) -> Result<u8, CliError> {
    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs_f64(s));
    ctx.with_client(Login::Normal, async |client, events| {
        let mut count = 0u64;
        loop {
            if args.count.is_some_and(|n| count >= n) {
                return Ok(exit_code::SUCCESS);
            }
            let event = match deadline {
                Some(d) => tokio::select! {
                    e = events.recv() => e,
                    _ = sleep_until(d) => {
                        return Ok(if args.count.is_some() { exit_code::LISTEN_TIMEOUT } else { exit_code::SUCCESS });
                    }
                },
                None => events.recv().await,
            };
            match event {
                None => return Err(Error::ConnectionLost("the connection ended".into()).into()),
                Some(Event::Message(m)) => {
                    ctx.out.emit(|| message_json(&m), || message_human(&m))?;
                    // Acknowledged only once printed (and flushed): a closed stdout leaves it
                    // for the next listen.
                    client.ack(m.id)?;
                    count += 1;
                }
                Some(Event::Disconnected { reason, reconnecting }) => {
                    ctx.out.event(&Event::Disconnected {
                        reason: reason.clone(),
                        reconnecting,
                    })?;
                    if !reconnecting {
                        return Err(reason.to_error().into());
                    }
                }
                Some(other) => ctx.out.event(&other)?,
            }
        }
    })
    .await
}

pub async fn history(ctx: &Context, args: HistoryArgs) -> Result<u8, CliError> {
    let with = parse_target(&args.peer)?;
    ctx.with_client(Login::Normal, async |client, _| {
        let page = client
            .history(&with, args.before.map(MessageId), None, args.limit)
            .await?;
        for m in &page.messages {
            ctx.out.emit(|| message_json(m), || message_human(m))?;
        }
        let oldest = page.messages.first().map(|m| m.id.0);
        ctx.out.emit(
            || JsonLine::new("history_end").bool("more", page.more).finish(),
            || match (page.more, oldest) {
                (true, Some(id)) => format!("(older messages: --before {id})"),
                _ if page.messages.is_empty() => "(no messages)".into(),
                _ => "(beginning of the conversation)".into(),
            },
        )
    })
    .await?;
    Ok(exit_code::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &[&str], lines: bool) -> SendArgs {
        SendArgs {
            to: "bob".into(),
            text: text.iter().map(|s| s.to_string()).collect(),
            lines,
            client_id: None,
            me: false,
        }
    }

    fn stdin(s: &'static str) -> impl FnOnce() -> Result<String, CliError> {
        move || Ok(s.to_owned())
    }

    #[test]
    fn text_from_arguments_wins_over_stdin() {
        let t = texts(&args(&["hello", "there"], false), || panic!("stdin must not be read")).unwrap();
        assert_eq!(t, ["hello there"]);
    }

    #[test]
    fn text_from_stdin_whole_or_by_line() {
        assert_eq!(texts(&args(&[], false), stdin("one\ntwo\n")).unwrap(), ["one\ntwo"]);
        assert_eq!(texts(&args(&[], false), stdin("crlf\r\n")).unwrap(), ["crlf"]);
        assert_eq!(
            texts(&args(&[], true), stdin("one\n\n  \ntwo\r\n")).unwrap(),
            ["one", "two"]
        );
        assert!(texts(&args(&[], true), stdin("")).unwrap().is_empty());
        assert_eq!(texts(&args(&[], false), stdin("\n")).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn too_long_text_is_refused_locally_with_6() {
        let long = "x".repeat(MAX_TEXT + 1);
        let err = texts(&args(&[&long], false), stdin("")).unwrap_err();
        assert_eq!((err.exit_code(), err.code_name()), (6, "refused"));
        assert!(texts(&args(&[&"x".repeat(MAX_TEXT)], false), stdin("")).is_ok());
    }

    #[test]
    fn client_ids_for_one_or_many() {
        assert_eq!(client_ids(Some("job-7"), 1).unwrap(), ["job-7"]);
        assert_eq!(client_ids(Some("job-7"), 3).unwrap(), ["job-7-1", "job-7-2", "job-7-3"]);
        let r = client_ids(None, 2).unwrap();
        assert!(r[0].ends_with("-1") && r[0].len() == 26 && r[0][..24] == r[1][..24]);
        assert_ne!(client_ids(None, 1).unwrap(), client_ids(None, 1).unwrap());
        assert_eq!(client_ids(Some("has space"), 1).unwrap_err().exit_code(), 2);
        assert_eq!(client_ids(Some(&"x".repeat(64)), 2).unwrap_err().exit_code(), 2);
    }
}
