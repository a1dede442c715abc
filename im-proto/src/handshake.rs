//! The handshake state machines (PROTOCOL.md §Handshake).
//!
//! ```text
//! client                                         server
//! ClientHello (seq 0)       ----------------->
//!                           <-----------------   ServerHello (seq 0)
//!                           <-----------------   ServerAuth  (seq 1, full handshake only)
//!                           <-----------------   Finished record (s2c keys)
//! Finished record (c2s)     ----------------->
//! ```
//!
//! Full handshake: ephemeral X25519, the server signs the transcript with its RSA host key.
//! Resumption: the client names a ticket from an earlier login and both sides mix the
//! ticket's secret into the key schedule with a fresh X25519 exchange, so a reconnect costs
//! neither an RSA signature nor a password hash; knowing the ticket secret is what
//! authenticates both sides.
//!
//! The server side is a chain of types, one per state, because its driver must pause between
//! steps (to look up a ticket, or to sign on a worker thread). The client side is driven
//! frame by frame through [`ClientHandshake::handle`].

use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::{hmac_sha256, hmac_sha256_verify, sha256};
use crate::frame::{Frame, FrameType, write_frame};
use crate::hostkey::{KeyError, RsaSigner, check_public_key, verify_rsa_pss};
use crate::keys::HandshakeSecrets;
use crate::limits::{MAX_PUBLIC_KEY_DER, MAX_REASON, MAX_SIGNATURE, TICKET_ID_LEN};
use crate::record::{Opener, RecordError, RekeyPolicy, Sealer};
use crate::session::Session;
use crate::wire::{Reader, WireError, Writer};

/// Protocol versions this implementation speaks, best first.
pub const VERSIONS: &[u8] = &[1];
/// Suite 1: X25519, RSA-PSS-SHA256 host key, Blowfish-448-CTR, HMAC-SHA256, HKDF-SHA256.
pub const SUITE_1: u16 = 1;
pub const SUITES: &[u16] = &[SUITE_1];
/// Most versions or suites one hello may list.
pub const MAX_OFFERS: usize = 16;
/// Context of the host key's signature, so it can never be confused with another use.
pub const SERVER_AUTH_CONTEXT: &[u8] = b"im1 server auth\0";
/// Context of a retiring host key's endorsement of its successor (§4.3).
pub const ROTATION_CONTEXT: &[u8] = b"im1 key rotation\0";

pub type TicketId = [u8; TICKET_ID_LEN];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("expected {expected}, got a {got:?} frame")]
    UnexpectedFrame { expected: &'static str, got: FrameType },
    #[error("handshake frame with sequence number {got}, expected {expected}")]
    Sequence { expected: u32, got: u32 },
    #[error("malformed handshake message: {0}")]
    Malformed(#[from] WireError),
    #[error("no protocol version in common (peer offered {0:?})")]
    NoCommonVersion(Vec<u8>),
    #[error("no cipher suite in common (peer offered {0:?})")]
    NoCommonSuite(Vec<u16>),
    #[error("server chose version {version} / suite {suite}, which the client did not offer")]
    NotOffered { version: u8, suite: u16 },
    #[error("server resumed a session the client did not ask to resume")]
    UnexpectedResumption,
    #[error("server host key is unacceptable: {0}")]
    BadHostKey(String),
    #[error("server signature over the handshake does not verify (wrong key, or the handshake was tampered with)")]
    BadSignature,
    #[error("Finished MAC does not verify (tampered handshake, or wrong ticket secret)")]
    BadFinished,
    #[error("server refused the connection: {text} (code {code}{})", retry_after_ms.map(|ms| format!(", retry after {ms} ms")).unwrap_or_default())]
    Rejected {
        code: u16,
        retry_after_ms: Option<u32>,
        text: String,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Keeps the running transcript hash over every handshake frame, byte for byte as sent.
#[derive(Clone, Default)]
struct Transcript(Sha256);

impl Transcript {
    fn add(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn hash(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

/// A resumption ticket as the client holds it.
#[derive(Clone)]
pub struct ResumeTicket {
    pub id: TicketId,
    pub secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ResumeTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeTicket")
            .field("id", &hex_short(&self.id))
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(4).map(|x| format!("{x:02x}")).collect::<String>() + "…"
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub versions: Vec<u8>,
    pub suites: Vec<u16>,
    pub random: [u8; 32],
    pub share: [u8; 32],
    pub ticket: Option<TicketId>,
}

impl ClientHello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u8(self.versions.len() as u8);
        for v in &self.versions {
            w.u8(*v);
        }
        w.u8(self.suites.len() as u8);
        for s in &self.suites {
            w.u16(*s);
        }
        w.bytes(&self.random).bytes(&self.share);
        match &self.ticket {
            None => w.u8(0),
            Some(id) => w.u8(1).bytes(id),
        };
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let nv = usize::from(r.u8("versions count")?);
        if nv == 0 || nv > MAX_OFFERS {
            return Err(WireError::Invalid {
                field: "versions count",
                value: nv as u64,
            });
        }
        let versions = r.bytes("versions", nv)?.to_vec();
        let ns = usize::from(r.u8("suites count")?);
        if ns == 0 || ns > MAX_OFFERS {
            return Err(WireError::Invalid {
                field: "suites count",
                value: ns as u64,
            });
        }
        let suites = (0..ns).map(|_| r.u16("suite")).collect::<Result<_, _>>()?;
        let random = r.array("client random")?;
        let share = r.array("client share")?;
        let ticket = if r.bool("has ticket")? {
            Some(r.array("ticket id")?)
        } else {
            None
        };
        r.finish()?;
        Ok(ClientHello {
            versions,
            suites,
            random,
            share,
            ticket,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub version: u8,
    pub suite: u16,
    pub random: [u8; 32],
    pub share: [u8; 32],
    pub resumed: bool,
}

impl ServerHello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .u8(self.version)
            .u16(self.suite)
            .bytes(&self.random)
            .bytes(&self.share)
            .bool(self.resumed);
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let hello = ServerHello {
            version: r.u8("version")?,
            suite: r.u16("suite")?,
            random: r.array("server random")?,
            share: r.array("server share")?,
            resumed: r.bool("resumed")?,
        };
        r.finish()?;
        Ok(hello)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAuth {
    pub host_key: Vec<u8>,
    pub signature: Vec<u8>,
    /// Present while a host-key rotation's grace period lasts: the previous key vouches for
    /// this one.
    pub endorsement: Option<Endorsement>,
}

impl ServerAuth {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.blob(&self.host_key).blob(&self.signature);
        match &self.endorsement {
            None => w.u8(0),
            Some(e) => w.u8(1).blob(&e.old_key).u64(e.not_after_ms).blob(&e.signature),
        };
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let host_key = r.blob("host key", MAX_PUBLIC_KEY_DER)?.to_vec();
        let signature = r.blob("signature", MAX_SIGNATURE)?.to_vec();
        let endorsement = if r.bool("has endorsement")? {
            Some(Endorsement::read(&mut r)?)
        } else {
            None
        };
        r.finish()?;
        Ok(ServerAuth {
            host_key,
            signature,
            endorsement,
        })
    }
}

/// A host-key rotation's endorsement (§4.3): the retiring key signs its successor's
/// SubjectPublicKeyInfo and the end of the grace period, so that a client that pinned the old
/// key can pin the new one without asking anybody.
#[derive(Clone, PartialEq, Eq)]
pub struct Endorsement {
    /// The retiring key's SubjectPublicKeyInfo DER.
    pub old_key: Vec<u8>,
    /// Milliseconds since the Unix epoch after which the endorsement is void.
    pub not_after_ms: u64,
    /// RSA-PSS-SHA256 by the old key over [`endorsement_message`].
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for Endorsement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endorsement")
            .field("old_key", &crate::crypto::fingerprint(&self.old_key))
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

/// What a retiring key signs: the context, the hash of the new key's SubjectPublicKeyInfo
/// DER, and the end of the grace period (u64, big-endian milliseconds).
pub fn endorsement_message(new_key: &[u8], not_after_ms: u64) -> Vec<u8> {
    let mut m = ROTATION_CONTEXT.to_vec();
    m.extend_from_slice(&sha256(&[new_key]));
    m.extend_from_slice(&not_after_ms.to_be_bytes());
    m
}

impl Endorsement {
    /// `old` vouches for `new_key` (SubjectPublicKeyInfo DER) until `not_after_ms`.
    pub fn sign(
        old: &RsaSigner,
        new_key: &[u8],
        not_after_ms: u64,
        rng: &mut (impl rand::CryptoRng + ?Sized),
    ) -> Endorsement {
        Endorsement {
            old_key: old.public_der().to_vec(),
            not_after_ms,
            signature: old.sign(rng, &endorsement_message(new_key, not_after_ms)),
        }
    }

    /// Checks that the old key signed `new_key` with this grace period. Whether the old key
    /// is trusted and the period has not ended is the caller's decision.
    pub fn verify(&self, new_key: &[u8]) -> Result<(), KeyError> {
        verify_rsa_pss(
            &self.old_key,
            &endorsement_message(new_key, self.not_after_ms),
            &self.signature,
        )
    }

    /// The fields alone, as in ServerAuth after the presence byte (also the server's file).
    pub fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .blob(&self.old_key)
            .u64(self.not_after_ms)
            .blob(&self.signature);
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let e = Endorsement::read(&mut r)?;
        r.finish()?;
        Ok(e)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Endorsement {
            old_key: r.blob("endorsing key", MAX_PUBLIC_KEY_DER)?.to_vec(),
            not_after_ms: r.u64("not after")?,
            signature: r.blob("endorsement signature", MAX_SIGNATURE)?.to_vec(),
        })
    }
}

/// A plaintext refusal before any keys exist. `code` uses the error code table of the
/// message catalogue; `retry_after_ms` 0 means "no advice".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: u16,
    pub retry_after_ms: u32,
    pub text: String,
}

impl Reject {
    pub fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out).u16(self.code).u32(self.retry_after_ms).str(&self.text);
    }

    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        let rej = Reject {
            code: r.u16("code")?,
            retry_after_ms: r.u32("retry after")?,
            text: r.str("text", MAX_REASON)?.to_owned(),
        };
        r.finish()?;
        Ok(rej)
    }

    /// The whole Reject frame, as a server's first (and last) frame on a connection.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        self.encode(&mut payload);
        let mut out = Vec::new();
        write_frame(&mut out, FrameType::Reject, 0, 0, &payload);
        out
    }

    fn into_error(self) -> HandshakeError {
        HandshakeError::Rejected {
            code: self.code,
            retry_after_ms: (self.retry_after_ms > 0).then_some(self.retry_after_ms),
            text: self.text,
        }
    }
}

/// The message the host key signs: the context string, then the hash of ClientHello frame,
/// ServerHello frame and the host key's SubjectPublicKeyInfo DER.
pub fn server_auth_message(client_hello: &[u8], server_hello: &[u8], host_key: &[u8]) -> Vec<u8> {
    let mut m = SERVER_AUTH_CONTEXT.to_vec();
    m.extend_from_slice(&sha256(&[client_hello, server_hello, host_key]));
    m
}

fn plaintext_frame(frame_type: FrameType, seq: u32, encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut payload = Vec::new();
    encode(&mut payload);
    let mut out = Vec::new();
    write_frame(&mut out, frame_type, 0, seq, &payload);
    out
}

fn expect(frame: &Frame, frame_type: FrameType, seq: u32, expected: &'static str) -> Result<(), HandshakeError> {
    if frame.header.frame_type == FrameType::Reject {
        let rej = Reject::decode(&frame.payload)?;
        return Err(rej.into_error());
    }
    if frame.header.frame_type != frame_type {
        return Err(HandshakeError::UnexpectedFrame {
            expected,
            got: frame.header.frame_type,
        });
    }
    if frame.header.seq != seq {
        return Err(HandshakeError::Sequence {
            expected: seq,
            got: frame.header.seq,
        });
    }
    Ok(())
}

fn client_finished_mac(secrets: &HandshakeSecrets, th: &[u8; 32], server_mac: &[u8]) -> [u8; 32] {
    hmac_sha256(&secrets.c_finished[..], &[th, server_mac])
}

/// What a finished handshake gives the client.
pub struct ClientEstablished {
    pub session: Session,
    /// The client's Finished record: send it before anything else.
    pub finished: Vec<u8>,
    /// The host key (SubjectPublicKeyInfo DER) that signed a full handshake; `None` when
    /// resumed (the ticket authenticated the server). Check it against the pin *before*
    /// sending a password.
    pub host_key: Option<Vec<u8>>,
    /// The host key's endorsement by its predecessor, if the server sent one; not yet
    /// verified (that, and whether the predecessor is the pinned key, is the client's call).
    pub endorsement: Option<Endorsement>,
    pub resumed: bool,
    pub exporter: Zeroizing<[u8; 32]>,
}

enum ClientState {
    ExpectServerHello,
    ExpectServerAuth {
        hello: ServerHello,
        sh_frame: Vec<u8>,
    },
    ExpectFinished {
        secrets: HandshakeSecrets,
        th: [u8; 32],
        host_key: Option<Vec<u8>>,
        endorsement: Option<Endorsement>,
        resumed: bool,
        seq: u32,
    },
    Done,
}

/// The client's handshake: created with its ClientHello, then fed server frames in order.
pub struct ClientHandshake {
    state: ClientState,
    hello: ClientHello,
    ch_frame: Vec<u8>,
    transcript: Transcript,
    ephemeral: StaticSecret,
    ticket: Option<ResumeTicket>,
    policy: RekeyPolicy,
}

impl ClientHandshake {
    /// Starts a handshake with fresh randomness. Returns the state and the ClientHello to send.
    pub fn new(rng: &mut (impl rand::CryptoRng + ?Sized), ticket: Option<ResumeTicket>) -> (Self, Vec<u8>) {
        let mut random = [0u8; 32];
        let mut eph = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut random);
        rng.fill_bytes(&mut *eph);
        Self::with_inputs(random, *eph, ticket, RekeyPolicy::default())
    }

    /// Starts a handshake from explicit inputs: used by the test vectors and by tests that
    /// lower the rekey thresholds.
    pub fn with_inputs(
        random: [u8; 32],
        ephemeral: [u8; 32],
        ticket: Option<ResumeTicket>,
        policy: RekeyPolicy,
    ) -> (Self, Vec<u8>) {
        let ephemeral = StaticSecret::from(ephemeral);
        let hello = ClientHello {
            versions: VERSIONS.to_vec(),
            suites: SUITES.to_vec(),
            random,
            share: DhPublic::from(&ephemeral).to_bytes(),
            ticket: ticket.as_ref().map(|t| t.id),
        };
        let ch_frame = plaintext_frame(FrameType::ClientHello, 0, |b| hello.encode(b));
        let mut transcript = Transcript::default();
        transcript.add(&ch_frame);
        let hs = ClientHandshake {
            state: ClientState::ExpectServerHello,
            hello,
            ch_frame: ch_frame.clone(),
            transcript,
            ephemeral,
            ticket,
            policy,
        };
        (hs, ch_frame)
    }

    /// Feeds the next server frame. `Ok(None)`: more frames needed. After an error the
    /// handshake is dead and the connection must end.
    pub fn handle(&mut self, frame: Frame) -> Result<Option<ClientEstablished>, HandshakeError> {
        match std::mem::replace(&mut self.state, ClientState::Done) {
            ClientState::ExpectServerHello => {
                expect(&frame, FrameType::ServerHello, 0, "ServerHello")?;
                let hello = ServerHello::decode(&frame.payload)?;
                if !self.hello.versions.contains(&hello.version) || !self.hello.suites.contains(&hello.suite) {
                    return Err(HandshakeError::NotOffered {
                        version: hello.version,
                        suite: hello.suite,
                    });
                }
                let sh_frame = frame.to_bytes();
                self.transcript.add(&sh_frame);
                if hello.resumed {
                    let ticket = self.ticket.as_ref().ok_or(HandshakeError::UnexpectedResumption)?;
                    let th = self.transcript.hash();
                    let dh = self.ephemeral.diffie_hellman(&DhPublic::from(hello.share));
                    let secrets = HandshakeSecrets::derive(&th, dh.as_bytes(), Some(&ticket.secret));
                    self.state = ClientState::ExpectFinished {
                        secrets,
                        th,
                        host_key: None,
                        endorsement: None,
                        resumed: true,
                        seq: 1,
                    };
                } else {
                    self.state = ClientState::ExpectServerAuth { hello, sh_frame };
                }
                Ok(None)
            }
            ClientState::ExpectServerAuth { hello, sh_frame } => {
                expect(&frame, FrameType::ServerAuth, 1, "ServerAuth")?;
                let auth = ServerAuth::decode(&frame.payload)?;
                check_public_key(&auth.host_key).map_err(|e| HandshakeError::BadHostKey(e.to_string()))?;
                let msg = server_auth_message(&self.ch_frame, &sh_frame, &auth.host_key);
                verify_rsa_pss(&auth.host_key, &msg, &auth.signature).map_err(|_| HandshakeError::BadSignature)?;
                self.transcript.add(&frame.to_bytes());
                let th = self.transcript.hash();
                let dh = self.ephemeral.diffie_hellman(&DhPublic::from(hello.share));
                let secrets = HandshakeSecrets::derive(&th, dh.as_bytes(), None);
                self.state = ClientState::ExpectFinished {
                    secrets,
                    th,
                    host_key: Some(auth.host_key),
                    endorsement: auth.endorsement,
                    resumed: false,
                    seq: 2,
                };
                Ok(None)
            }
            ClientState::ExpectFinished {
                secrets,
                th,
                host_key,
                endorsement,
                resumed,
                seq,
            } => {
                if frame.header.frame_type != FrameType::Finished {
                    return Err(HandshakeError::UnexpectedFrame {
                        expected: "Finished",
                        got: frame.header.frame_type,
                    });
                }
                let mut opener = Opener::new(secrets.s2c.clone(), seq, self.policy);
                let server_mac = opener.open(frame)?;
                if !hmac_sha256_verify(&secrets.s_finished[..], &[&th], &server_mac) {
                    return Err(HandshakeError::BadFinished);
                }
                let mut sealer = Sealer::new(secrets.c2s.clone(), 1, self.policy);
                let mut finished = Vec::new();
                sealer.seal(
                    FrameType::Finished,
                    &client_finished_mac(&secrets, &th, &server_mac),
                    &mut finished,
                )?;
                Ok(Some(ClientEstablished {
                    session: Session::new(sealer, opener),
                    finished,
                    host_key,
                    endorsement,
                    resumed,
                    exporter: secrets.exporter,
                }))
            }
            ClientState::Done => Err(HandshakeError::UnexpectedFrame {
                expected: "nothing (handshake over)",
                got: frame.header.frame_type,
            }),
        }
    }
}

/// The server before anything arrived: it waits for a ClientHello.
pub struct ServerHandshake;

impl ServerHandshake {
    /// Reads the ClientHello and picks the version and suite. On `NoCommonVersion` or
    /// `NoCommonSuite` the server should answer with a [`Reject`] frame and close.
    pub fn read_client_hello(frame: Frame) -> Result<ClientHelloReceived, HandshakeError> {
        expect(&frame, FrameType::ClientHello, 0, "ClientHello")?;
        let hello = ClientHello::decode(&frame.payload)?;
        let version = VERSIONS
            .iter()
            .copied()
            .find(|v| hello.versions.contains(v))
            .ok_or_else(|| HandshakeError::NoCommonVersion(hello.versions.clone()))?;
        let suite = SUITES
            .iter()
            .copied()
            .find(|s| hello.suites.contains(s))
            .ok_or_else(|| HandshakeError::NoCommonSuite(hello.suites.clone()))?;
        let ch_frame = frame.to_bytes();
        let mut transcript = Transcript::default();
        transcript.add(&ch_frame);
        Ok(ClientHelloReceived {
            hello,
            ch_frame,
            transcript,
            version,
            suite,
        })
    }
}

/// The server has the ClientHello; the driver now decides between resumption (it found the
/// ticket) and a full handshake (which signs: run it on a worker thread).
pub struct ClientHelloReceived {
    hello: ClientHello,
    ch_frame: Vec<u8>,
    transcript: Transcript,
    version: u8,
    suite: u16,
}

/// The server's fresh inputs for one handshake.
pub struct ServerInputs {
    pub random: [u8; 32],
    pub ephemeral: Zeroizing<[u8; 32]>,
    pub policy: RekeyPolicy,
}

impl ServerInputs {
    pub fn random(rng: &mut (impl rand::CryptoRng + ?Sized)) -> Self {
        let mut s = ServerInputs {
            random: [0; 32],
            ephemeral: Zeroizing::new([0; 32]),
            policy: RekeyPolicy::default(),
        };
        rng.fill_bytes(&mut s.random);
        rng.fill_bytes(&mut *s.ephemeral);
        s
    }
}

impl ClientHelloReceived {
    /// The ticket the client wants to resume with, if any.
    pub fn ticket_id(&self) -> Option<TicketId> {
        self.hello.ticket
    }

    fn server_hello(&self, inputs: &ServerInputs, secret: &StaticSecret, resumed: bool) -> Vec<u8> {
        let hello = ServerHello {
            version: self.version,
            suite: self.suite,
            random: inputs.random,
            share: DhPublic::from(secret).to_bytes(),
            resumed,
        };
        plaintext_frame(FrameType::ServerHello, 0, |b| hello.encode(b))
    }

    /// Resumes with the ticket's secret: no signature. Returns the frames to send.
    pub fn resume(mut self, inputs: ServerInputs, psk: &[u8; 32]) -> (ExpectClientFinished, Vec<u8>) {
        let secret = StaticSecret::from(*inputs.ephemeral);
        let mut out = self.server_hello(&inputs, &secret, true);
        self.transcript.add(&out);
        self.finish(inputs.policy, &secret, Some(psk), 1, &mut out)
    }

    /// A full handshake: signs the transcript with the host key (about 2 ms of CPU for
    /// RSA-3072: keep it off the reactor). Returns the frames to send.
    pub fn full(
        self,
        inputs: ServerInputs,
        host_key: &RsaSigner,
        rng: &mut (impl rand::CryptoRng + ?Sized),
    ) -> (ExpectClientFinished, Vec<u8>) {
        self.full_endorsed(inputs, host_key, None, rng)
    }

    /// [`full`](Self::full), with the host key's endorsement by its predecessor while a
    /// rotation's grace period lasts (the caller checks the period; im-proto has no clock).
    pub fn full_endorsed(
        mut self,
        inputs: ServerInputs,
        host_key: &RsaSigner,
        endorsement: Option<&Endorsement>,
        rng: &mut (impl rand::CryptoRng + ?Sized),
    ) -> (ExpectClientFinished, Vec<u8>) {
        let secret = StaticSecret::from(*inputs.ephemeral);
        let mut out = self.server_hello(&inputs, &secret, false);
        let signature = host_key.sign(rng, &server_auth_message(&self.ch_frame, &out, host_key.public_der()));
        let auth = ServerAuth {
            host_key: host_key.public_der().to_vec(),
            signature,
            endorsement: endorsement.cloned(),
        };
        let sa_frame = plaintext_frame(FrameType::ServerAuth, 1, |b| auth.encode(b));
        self.transcript.add(&out);
        self.transcript.add(&sa_frame);
        out.extend_from_slice(&sa_frame);
        self.finish(inputs.policy, &secret, None, 2, &mut out)
    }

    fn finish(
        self,
        policy: RekeyPolicy,
        secret: &StaticSecret,
        psk: Option<&[u8; 32]>,
        seq: u32,
        out: &mut Vec<u8>,
    ) -> (ExpectClientFinished, Vec<u8>) {
        let th = self.transcript.hash();
        let dh = secret.diffie_hellman(&DhPublic::from(self.hello.share));
        let secrets = HandshakeSecrets::derive(&th, dh.as_bytes(), psk);
        let server_mac = hmac_sha256(&secrets.s_finished[..], &[&th]);
        let mut sealer = Sealer::new(secrets.s2c.clone(), seq, policy);
        sealer
            .seal(FrameType::Finished, &server_mac, out)
            .expect("a 32-byte Finished record always seals");
        let opener = Opener::new(secrets.c2s.clone(), 1, policy);
        let expect_mac = client_finished_mac(&secrets, &th, &server_mac);
        (
            ExpectClientFinished {
                sealer,
                opener,
                expect_mac,
                resumed: psk.is_some(),
                exporter: secrets.exporter,
            },
            std::mem::take(out),
        )
    }
}

/// The server has sent its Finished and waits for the client's. Cloning forks it (tests).
#[derive(Clone)]
pub struct ExpectClientFinished {
    sealer: Sealer,
    opener: Opener,
    expect_mac: [u8; 32],
    resumed: bool,
    exporter: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ClientEstablished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEstablished")
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

/// What a finished handshake gives the server.
pub struct ServerEstablished {
    pub session: Session,
    pub resumed: bool,
    pub exporter: Zeroizing<[u8; 32]>,
}

impl ExpectClientFinished {
    pub fn read_finished(mut self, frame: Frame) -> Result<ServerEstablished, HandshakeError> {
        if frame.header.frame_type != FrameType::Finished {
            return Err(HandshakeError::UnexpectedFrame {
                expected: "Finished",
                got: frame.header.frame_type,
            });
        }
        let mac = self.opener.open(frame)?;
        if !subtle_eq(&mac, &self.expect_mac) {
            return Err(HandshakeError::BadFinished);
        }
        Ok(ServerEstablished {
            session: Session::new(self.sealer, self.opener),
            resumed: self.resumed,
            exporter: self.exporter,
        })
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
