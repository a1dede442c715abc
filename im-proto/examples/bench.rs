//! Record-layer and handshake throughput beside the raw primitives, measured in one run.
//!
//!     cargo run --release -p im-proto --example bench
//!
//! Prints, for 128 B and 16 KiB records: seal and open through the record layer, and
//! Blowfish-CTR plus HMAC-SHA256 over the same bytes with the crates directly (the floor);
//! then one full RSA-3072 handshake's client and server CPU time beside one RSA-3072 PSS
//! signature. A benchmark prints numbers; it asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use im_proto::crypto::{BlowfishCtr, hmac_sha256};
use im_proto::frame::{FrameDecoder, FrameType};
use im_proto::handshake::{ClientHandshake, ResumeTicket, ServerHandshake, ServerInputs};
use im_proto::hostkey::RsaSigner;
use im_proto::keys::TrafficSecret;
use im_proto::record::{Opener, RekeyPolicy, Sealer};
use zeroize::Zeroizing;

/// Runs `f` repeatedly for about `budget`, returns the mean time per call.
fn time(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..10 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    start.elapsed() / n
}

fn mbps(bytes: usize, per: Duration) -> f64 {
    bytes as f64 / per.as_secs_f64() / 1e6
}

fn records(size: usize) {
    let budget = Duration::from_millis(700);
    let secret = TrafficSecret::from_bytes([3; 32]);
    let plaintext = vec![0x5a; size];
    // Raw floor: Blowfish-CTR then HMAC over header-sized prefix plus ciphertext.
    let keys = secret.keys();
    let mut ctr = BlowfishCtr::new(&keys.enc, &keys.iv);
    let mut buf = plaintext.clone();
    let mut block = 0u64;
    let raw = time(budget, || {
        buf.copy_from_slice(&plaintext);
        ctr.apply(block, &mut buf);
        block += size.div_ceil(8) as u64;
        black_box(hmac_sha256(&keys.mac[..], &[&[0u8; 16], &buf]));
    });
    // Seal through the record layer (rekeying as the protocol does).
    let mut sealer = Sealer::new(secret.clone(), 0, RekeyPolicy::default());
    let mut out = Vec::with_capacity(size + 64);
    let seal = time(budget, || {
        out.clear();
        sealer.seal(FrameType::Data, &plaintext, &mut out).unwrap();
        black_box(&out);
    });
    // Open: pre-seal a run of records, then open them in order.
    let mut sealer = Sealer::new(secret.clone(), 0, RekeyPolicy::default());
    let n = (200_000_000 / (size + 48)).clamp(1000, 200_000);
    let mut wire = Vec::with_capacity(n * (size + 48));
    for _ in 0..n {
        sealer.seal(FrameType::Data, &plaintext, &mut wire).unwrap();
    }
    let mut opener = Opener::new(secret, 0, RekeyPolicy::default());
    let mut dec = FrameDecoder::new();
    let mut input = BytesMut::from(&wire[..]);
    let start = Instant::now();
    for _ in 0..n {
        let f = dec.decode(&mut input).unwrap().unwrap();
        black_box(opener.open(f).unwrap());
    }
    let open = start.elapsed() / n as u32;
    println!(
        "record {size:>5} B: raw ctr+hmac {:>8.2} µs ({:>6.1} MB/s) | seal {:>8.2} µs ({:>6.1} MB/s, {:>5.1} % of raw, +{:.2} µs) | open {:>8.2} µs ({:>6.1} MB/s, {:>5.1} % of raw, +{:.2} µs)",
        raw.as_secs_f64() * 1e6,
        mbps(size, raw),
        seal.as_secs_f64() * 1e6,
        mbps(size, seal),
        raw.as_secs_f64() / seal.as_secs_f64() * 100.0,
        (seal.as_secs_f64() - raw.as_secs_f64()) * 1e6,
        open.as_secs_f64() * 1e6,
        mbps(size, open),
        raw.as_secs_f64() / open.as_secs_f64() * 100.0,
        (open.as_secs_f64() - raw.as_secs_f64()) * 1e6,
    );
}

fn cpu_now() -> Duration {
    // Thread CPU time, so the numbers exclude waiting.
    let mut ts = libc_timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe {
        clock_gettime(3 /* CLOCK_THREAD_CPUTIME_ID */, &mut ts)
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clk: i32, ts: *mut libc_timespec) -> i32;
}

fn handshakes() {
    let key = RsaSigner::from_pkcs8_pem(include_str!("../tests/data/host_key.pem")).unwrap();
    let mut rng = rand::rng();
    let rounds = 100;
    let (mut client_cpu, mut server_cpu, mut sign_cpu) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut resume_client, mut resume_server) = (Duration::ZERO, Duration::ZERO);
    let frames = |b: &[u8]| {
        let mut d = FrameDecoder::new();
        let mut buf = BytesMut::from(b);
        std::iter::from_fn(move || d.decode(&mut buf).unwrap()).collect::<Vec<_>>()
    };
    for _ in 0..rounds {
        let t = cpu_now();
        black_box(key.sign(&mut rng, b"one signature alone"));
        sign_cpu += cpu_now() - t;

        for ticket in [
            None,
            Some(ResumeTicket {
                id: [1; 16],
                secret: Zeroizing::new([2; 32]),
            }),
        ] {
            let t = cpu_now();
            let (mut client, ch) = ClientHandshake::new(&mut rng, ticket.clone());
            let mut c = cpu_now() - t;
            let t = cpu_now();
            let hello = ServerHandshake::read_client_hello(frames(&ch).remove(0)).unwrap();
            let (expect, s2c) = match &ticket {
                None => hello.full(ServerInputs::random(&mut rng), &key, &mut rng),
                Some(tk) => hello.resume(ServerInputs::random(&mut rng), &tk.secret),
            };
            let mut s = cpu_now() - t;
            let t = cpu_now();
            let mut est = None;
            for f in frames(&s2c) {
                est = client.handle(f).unwrap();
            }
            let est = est.unwrap();
            c += cpu_now() - t;
            let t = cpu_now();
            black_box(expect.read_finished(frames(&est.finished).remove(0)).unwrap());
            s += cpu_now() - t;
            if ticket.is_none() {
                client_cpu += c;
                server_cpu += s;
            } else {
                resume_client += c;
                resume_server += s;
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(rounds);
    println!("RSA-3072 PSS signature alone:       {:.3} ms CPU", ms(sign_cpu));
    println!(
        "full handshake (RSA-3072):          server {:.3} ms CPU ({:.1} % of it the signature), client {:.3} ms CPU",
        ms(server_cpu),
        ms(sign_cpu) / ms(server_cpu) * 100.0,
        ms(client_cpu)
    );
    println!(
        "resumption handshake:               server {:.3} ms CPU, client {:.3} ms CPU",
        ms(resume_server),
        ms(resume_client)
    );
}

fn main() {
    records(128);
    records(16 * 1024);
    handshakes();
}
