//! Fixtures shared by the fuzz targets: fixed handshake inputs, fixed keys, and in-memory
//! exchanges that are expensive to build (an RSA signature, X25519) and so are built once per
//! process, in a `OnceLock`, and cloned or replayed by every execution.
//!
//! # Layout
//! - `fuzz_targets/frame_header.rs`: [`Header::decode`](im_proto::frame::Header::decode) and
//!   the incremental [`FrameDecoder`], against any chunking.
//! - `fuzz_targets/record_open.rs`: an established [`Session`] reading arbitrary bytes; sealed
//!   records opening to their plaintext; tampered records never opening.
//! - `fuzz_targets/handshake_server.rs`: the server's ClientHello and Finished readers.
//! - `fuzz_targets/handshake_client.rs`: the client state machine fed server frames.
//! - `fuzz_targets/message_decode.rs`: the message catalogue and Close reasons, and the claim
//!   that every encoding is canonical.

use std::sync::OnceLock;

use bytes::BytesMut;
use im_proto::frame::{Frame, FrameDecoder, FrameError};
use im_proto::handshake::{
    ClientEstablished, ClientHandshake, ExpectClientFinished, HandshakeError, ResumeTicket, ServerHandshake,
    ServerInputs,
};
use im_proto::hostkey::RsaSigner;
use im_proto::record::RekeyPolicy;
use im_proto::session::Session;
use rand::SeedableRng;
use rand::rngs::StdRng;
use zeroize::Zeroizing;

/// The fixed test host key of im-proto's own tests (RSA-3072, PKCS#8 PEM).
pub fn host_key() -> &'static RsaSigner {
    static KEY: OnceLock<RsaSigner> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaSigner::from_pkcs8_pem(include_str!("../../tests/data/host_key.pem")).expect("test host key parses")
    })
}

/// The client's random and X25519 secret: fixed, so every handshake here is reproducible.
pub const CLIENT_RANDOM: [u8; 32] = [1; 32];
pub const CLIENT_EPHEMERAL: [u8; 32] = [101; 32];

/// The server's fresh inputs, fixed likewise.
pub fn server_inputs(policy: RekeyPolicy) -> ServerInputs {
    ServerInputs {
        random: [51; 32],
        ephemeral: Zeroizing::new([151; 32]),
        policy,
    }
}

/// The resumption ticket the client presents and the server knows.
pub fn ticket() -> ResumeTicket {
    ResumeTicket {
        id: [9; 16],
        secret: Zeroizing::new([42; 32]),
    }
}

/// A lowered rekey policy, so that a few small records already ratchet the keys. The
/// receiver's ceiling stays far above one key's use, or a legitimate sender would trip it.
pub fn small_policy() -> RekeyPolicy {
    RekeyPolicy {
        after_blocks: 64,
        after_records: 3,
        ..RekeyPolicy::default()
    }
}

/// The client handshake from the fixed inputs, with or without the ticket.
pub fn client(with_ticket: bool) -> (ClientHandshake, Vec<u8>) {
    ClientHandshake::with_inputs(
        CLIENT_RANDOM,
        CLIENT_EPHEMERAL,
        with_ticket.then(ticket),
        RekeyPolicy::default(),
    )
}

/// Splits a stream into frames, stopping at the first incomplete frame or framing error.
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        out.push(frame);
    }
    out
}

/// Decodes a whole stream of frames as a peer would: each frame is handed to `handle` as
/// soon as it is complete, until `handle` says stop, the stream runs out, or a framing error.
pub fn for_each_frame(bytes: &[u8], mut handle: impl FnMut(Frame) -> bool) -> Result<(), FrameError> {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(bytes);
    while let Some(frame) = decoder.decode(&mut buf)? {
        if !handle(frame) {
            break;
        }
    }
    Ok(())
}

/// What the fixed server sends the fixed client: its whole flight for a full handshake or a
/// resumption. Built once; a full flight costs an RSA-3072 signature.
pub fn server_flight(resumed: bool) -> &'static [u8] {
    static FULL: OnceLock<Vec<u8>> = OnceLock::new();
    static RESUMED: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = if resumed { &RESUMED } else { &FULL };
    cell.get_or_init(|| {
        let (_, hello) = client(resumed);
        let received = ServerHandshake::read_client_hello(frames(&hello).remove(0)).expect("our ClientHello parses");
        let inputs = server_inputs(RekeyPolicy::default());
        let (_, flight) = if resumed {
            received.resume(inputs, &ticket().secret)
        } else {
            received.full(inputs, host_key(), &mut StdRng::seed_from_u64(7))
        };
        flight
    })
}

/// How the fixed client fared against a server byte stream.
#[derive(Debug, Default)]
pub struct ClientRun {
    pub established: Option<ClientEstablished>,
    /// Frames the client was handed after it had established the session.
    pub frames_after: usize,
    /// The handshake error that ended the run, if one did.
    pub refused: Option<HandshakeError>,
    /// The framing error that ended the run, if one did.
    pub framing: Option<FrameError>,
}

/// Runs the fixed client against a server byte stream, frame by frame, until the stream
/// runs out or the client or the framing fails.
pub fn run_client(with_ticket: bool, stream: &[u8]) -> ClientRun {
    let (mut client, _) = client(with_ticket);
    let mut run = ClientRun::default();
    let framing = for_each_frame(stream, |frame| {
        if run.established.is_some() {
            run.frames_after += 1;
        }
        match client.handle(frame) {
            Ok(done) => {
                run.established = run.established.take().or(done);
                true
            }
            Err(e) => {
                run.refused = Some(e);
                false
            }
        }
    });
    run.framing = framing.err();
    run
}

/// A resumption between the fixed client and server, stopped just before the server reads
/// the client's Finished: the server's state, and the client's genuine Finished record.
pub struct PendingFinished {
    pub server: ExpectClientFinished,
    pub client_finished: Vec<u8>,
}

pub fn pending_finished() -> &'static PendingFinished {
    static PENDING: OnceLock<PendingFinished> = OnceLock::new();
    PENDING.get_or_init(|| {
        let (_, hello) = client(true);
        let received = ServerHandshake::read_client_hello(frames(&hello).remove(0)).expect("our ClientHello parses");
        let (server, flight) = received.resume(server_inputs(RekeyPolicy::default()), &ticket().secret);
        let run = run_client(true, &flight);
        let client = run.established.expect("the fixed resumption succeeds");
        PendingFinished {
            server,
            client_finished: client.finished,
        }
    })
}

/// Both ends of an established connection (resumed: no RSA), under `policy`.
#[derive(Clone)]
pub struct Established {
    pub client: Session,
    pub server: Session,
}

fn establish(policy: RekeyPolicy) -> Established {
    let (mut client, hello) = ClientHandshake::with_inputs(CLIENT_RANDOM, CLIENT_EPHEMERAL, Some(ticket()), policy);
    let received = ServerHandshake::read_client_hello(frames(&hello).remove(0)).expect("our ClientHello parses");
    let (server, flight) = received.resume(server_inputs(policy), &ticket().secret);
    let mut done = None;
    for frame in frames(&flight) {
        done = client.handle(frame).expect("fixed resumption succeeds");
    }
    let client = done.expect("whole flight");
    let server = server
        .read_finished(frames(&client.finished).remove(0))
        .expect("client Finished verifies");
    Established {
        client: client.session,
        server: server.session,
    }
}

/// An established pair under the default rekey policy.
pub fn established() -> &'static Established {
    static PAIR: OnceLock<Established> = OnceLock::new();
    PAIR.get_or_init(|| establish(RekeyPolicy::default()))
}

/// An established pair under [`small_policy`].
pub fn established_small_policy() -> &'static Established {
    static PAIR: OnceLock<Established> = OnceLock::new();
    PAIR.get_or_init(|| establish(small_policy()))
}

/// Flips bits of `bytes` as `edits` says: triples of (position: u16 big-endian, taken modulo
/// the length; xor mask). Edits may cancel out: compare with the original to know.
pub fn tamper(bytes: &mut [u8], edits: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    for edit in edits.chunks_exact(3) {
        let pos = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % bytes.len();
        bytes[pos] ^= edit[2];
    }
}
