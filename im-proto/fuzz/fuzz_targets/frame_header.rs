//! The frame header and the incremental frame decoder.
//!
//! - The first 16 bytes as a header: decoding is total, and a decoded header re-encodes to
//!   exactly those bytes (a header has one encoding).
//! - The rest as a byte stream, fed to a [`FrameDecoder`] in chunks whose size is the first
//!   byte: the frames and the error are the same however the stream is chunked, every frame
//!   is a verbatim slice of the stream, and no byte is lost or invented.
#![no_main]

use bytes::BytesMut;
use im_proto::frame::{FrameDecoder, FrameError, HEADER_LEN, Header};
use libfuzzer_sys::fuzz_target;

/// Frames (as wire bytes) and the framing error, if any, from feeding `stream` in `chunk`-byte
/// pieces; also checks the decoder's bookkeeping when the stream ends without an error.
fn decode(stream: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert_eq!(
                        frame.header.encode(),
                        frame.raw_header,
                        "a decoded header re-encodes verbatim"
                    );
                    assert_eq!(frame.payload.len(), frame.header.len as usize);
                    frames.push(frame.to_bytes());
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    let consumed: usize = frames.iter().map(Vec::len).sum();
    let held = if decoder.is_mid_frame() { HEADER_LEN } else { 0 };
    assert_eq!(
        consumed + held + buf.len(),
        stream.len(),
        "the decoder neither drops nor invents bytes"
    );
    if !decoder.is_mid_frame() {
        assert!(buf.len() < HEADER_LEN, "a whole header was left undecoded");
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    if let Some(raw) = data.first_chunk::<HEADER_LEN>()
        && let Ok(header) = Header::decode(raw)
    {
        assert_eq!(&header.encode(), raw);
    }

    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunked = decode(stream, usize::from(chunk).max(1));
    let whole = decode(stream, stream.len().max(1));
    assert_eq!(chunked, whole, "framing depends on how the stream was chunked");
    let (frames, _) = whole;
    assert!(
        stream.starts_with(&frames.concat()),
        "frames are the stream's own bytes, in order"
    );
});
