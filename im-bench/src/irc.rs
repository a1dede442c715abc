//! Just enough IRC to load ngIRCd and InspIRCd the way the im scenarios load im-server:
//! registration (NICK/USER, wait for 001), PING/PONG, JOIN, PRIVMSG; plaintext or TLS
//! (tokio-rustls; the peers' certificates are self-signed, so they are not verified: this is a
//! load generator on loopback, not a client anyone trusts).
//!
//! IRC has no acknowledgement and no storage: a PRIVMSG is "done" when the server has read
//! it, and a recipient that is offline never gets it. BENCHMARKS.md says so beside every
//! figure.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::sys::connect_retry;

/// A plaintext or TLS stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts any certificate: the peers run on loopback with a self-signed one.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration for the peers.
pub fn tls_connector() -> Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

pub async fn connect(src: IpAddr, addr: SocketAddr, tls: Option<&TlsConnector>) -> Result<Stream> {
    let tcp = connect_retry(src, addr).await.context("connect")?;
    Ok(match tls {
        None => Stream::Plain(tcp),
        Some(c) => {
            let name = ServerName::try_from("localhost").expect("valid name");
            Stream::Tls(Box::new(c.connect(name, tcp).await.context("TLS handshake")?))
        }
    })
}

/// One parsed line: the nick of the prefix (if any), the command, and the parameters with
/// the trailing one last.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub nick: Option<&'a str>,
    pub command: &'a str,
    pub params: Vec<&'a str>,
}

pub fn parse(line: &str) -> Option<Line<'_>> {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    let mut nick = None;
    if let Some(r) = rest.strip_prefix(':') {
        let (prefix, after) = r.split_once(' ')?;
        nick = Some(prefix.split(['!', '@']).next().unwrap_or(prefix));
        rest = after;
    }
    let (command, mut rest) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    if command.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p);
                rest = r;
            }
            None => {
                params.push(rest);
                break;
            }
        }
    }
    Some(Line { nick, command, params })
}

/// A registered IRC connection, split so that a reader task and a sender can run apart.
pub struct Client {
    pub reader: BufReader<ReadHalf<Stream>>,
    pub writer: Writer,
}

/// The sending half: a task owns the write half, fed by an unbounded queue, so that a
/// sender never waits for the server and a reader's PONG never waits behind a blocked sender
/// (see `im::Writer`).
#[derive(Clone)]
pub struct Writer(mpsc::UnboundedSender<String>);

impl Writer {
    fn spawn(mut w: WriteHalf<Stream>) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(mut text) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    text.push_str(&more);
                }
                if w.write_all(text.as_bytes()).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        });
        Writer(tx)
    }

    pub async fn send(&self, text: &str) -> Result<()> {
        self.0
            .send(text.to_owned())
            .map_err(|_| anyhow::anyhow!("connection closed"))
    }
}

/// Connects and registers as `nick`; returns once the server has welcomed us (001).
pub async fn register(src: IpAddr, addr: SocketAddr, tls: Option<&TlsConnector>, nick: &str) -> Result<Client> {
    let stream = connect(src, addr, tls).await?;
    let (r, w) = tokio::io::split(stream);
    let mut c = Client {
        reader: BufReader::with_capacity(4096, r),
        writer: Writer::spawn(w),
    };
    c.writer
        .send(&format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n"))
        .await?;
    c.wait_for(|l| l.command == "001").await.context("registration")?;
    Ok(c)
}

impl Client {
    /// Reads one line into `line` (cleared first), answering PING on the way. `Ok(false)` at
    /// end of stream.
    pub async fn next_line(&mut self, line: &mut String) -> Result<bool> {
        loop {
            line.clear();
            if self.reader.read_line(line).await? == 0 {
                return Ok(false);
            }
            if let Some(token) = line.strip_prefix("PING ") {
                let pong = format!("PONG {}\r\n", token.trim_end());
                self.writer.send(&pong).await?;
                continue;
            }
            return Ok(true);
        }
    }

    /// Reads until a line satisfies `done`; an ERROR line or end of stream is an error.
    pub async fn wait_for(&mut self, done: impl Fn(&Line<'_>) -> bool) -> Result<()> {
        let mut line = String::new();
        loop {
            if !self.next_line(&mut line).await? {
                bail!("server closed the connection");
            }
            let Some(l) = parse(&line) else { continue };
            if l.command == "ERROR" || l.command == "433" || l.command == "465" {
                bail!("server said: {}", line.trim_end());
            }
            if done(&l) {
                return Ok(());
            }
        }
    }

    /// Joins `channel` and waits for the end of its NAMES list.
    pub async fn join(&mut self, channel: &str) -> Result<()> {
        self.writer.send(&format!("JOIN {channel}\r\n")).await?;
        self.wait_for(|l| l.command == "366" || l.command == "405" || l.command == "471")
            .await
            .with_context(|| format!("joining {channel}"))
    }
}

/// Nick `i` with a one-letter prefix: short enough for every server's nick length.
pub fn nick(prefix: char, i: usize) -> String {
    let mut s = String::new();
    let mut n = i;
    loop {
        let d = (n % 36) as u32;
        s.insert(0, char::from_digit(d, 36).expect("digit"));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    format!("{prefix}{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let l = parse(":d1!~d1@127.0.0.1 PRIVMSG d2 :3 17 xxxx\r\n").unwrap();
        assert_eq!(l.nick, Some("d1"));
        assert_eq!(l.command, "PRIVMSG");
        assert_eq!(l.params, vec!["d2", "3 17 xxxx"]);
        let l = parse("PING :irc.local").unwrap();
        assert_eq!((l.nick, l.command, l.params), (None, "PING", vec!["irc.local"]));
        let l = parse(":srv 366 n1 #r10 :End of /NAMES list.").unwrap();
        assert_eq!(l.params[1], "#r10");
        assert!(parse("").is_none());
    }

    #[test]
    fn nicks_are_short_and_distinct() {
        assert_eq!(nick('i', 0), "i0");
        assert_eq!(nick('i', 35), "iz");
        assert_eq!(nick('i', 36), "i10");
        assert!(nick('i', 19_999).len() <= 9);
    }
}
