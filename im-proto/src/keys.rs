//! The key schedule (PROTOCOL.md §Key schedule).
//!
//! ```text
//! prk         = HKDF-Extract(salt = transcript hash, ikm = X25519 shared secret || psk)
//! c2s, s2c    = HKDF-Expand(prk, "im1 c2s traffic" | "im1 s2c traffic", 32)
//! c/s finish  = HKDF-Expand(prk, "im1 c finished" | "im1 s finished", 32)
//! exporter    = HKDF-Expand(prk, "im1 exporter", 32)
//! per epoch:  key = Expand(ts, "im1 key", 56), mac = Expand(ts, "im1 mac", 32), iv = Expand(ts, "im1 iv", 8)
//! ratchet:    ts' = Expand(ts, "im1 ratchet", 32)
//! ```
//!
//! `psk` is the resumption ticket's secret, or 32 zero bytes in a full handshake. Every
//! secret here is zeroized on drop; none implements `Debug` with its contents.

use zeroize::Zeroizing;

use crate::crypto::{BLOCK_LEN, BLOWFISH_KEY_LEN, hkdf_expand, hkdf_extract};

pub const LABEL_C2S: &[u8] = b"im1 c2s traffic";
pub const LABEL_S2C: &[u8] = b"im1 s2c traffic";
pub const LABEL_C_FINISHED: &[u8] = b"im1 c finished";
pub const LABEL_S_FINISHED: &[u8] = b"im1 s finished";
pub const LABEL_EXPORTER: &[u8] = b"im1 exporter";
pub const LABEL_KEY: &[u8] = b"im1 key";
pub const LABEL_MAC: &[u8] = b"im1 mac";
pub const LABEL_IV: &[u8] = b"im1 iv";
pub const LABEL_RATCHET: &[u8] = b"im1 ratchet";

type Secret = Zeroizing<[u8; 32]>;

fn expand32(prk: &[u8; 32], label: &[u8]) -> Secret {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf_expand(prk, label, &mut *out);
    out
}

/// The secret one direction's keys derive from; ratcheted forward on every rekey, the old
/// value dropped (and zeroized), so a later compromise does not expose earlier records.
#[derive(Clone)]
pub struct TrafficSecret(Secret);

impl TrafficSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        TrafficSecret(Zeroizing::new(b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn keys(&self) -> EpochKeys {
        let mut enc = Zeroizing::new([0u8; BLOWFISH_KEY_LEN]);
        hkdf_expand(&self.0, LABEL_KEY, &mut *enc);
        let mut iv = [0u8; BLOCK_LEN];
        hkdf_expand(&self.0, LABEL_IV, &mut iv);
        EpochKeys {
            enc,
            mac: expand32(&self.0, LABEL_MAC),
            iv,
        }
    }

    pub fn ratchet(&self) -> TrafficSecret {
        TrafficSecret(expand32(&self.0, LABEL_RATCHET))
    }
}

impl std::fmt::Debug for TrafficSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrafficSecret(<redacted>)")
    }
}

/// The keys of one direction in one epoch.
#[derive(Clone)]
pub struct EpochKeys {
    pub enc: Zeroizing<[u8; BLOWFISH_KEY_LEN]>,
    pub mac: Secret,
    /// First counter block. Not secret, but derived so both sides agree without sending it.
    pub iv: [u8; BLOCK_LEN],
}

/// Everything the handshake derives.
pub struct HandshakeSecrets {
    pub c2s: TrafficSecret,
    pub s2c: TrafficSecret,
    pub c_finished: Secret,
    pub s_finished: Secret,
    /// Bound to this connection's transcript; a user key signs it to log in.
    pub exporter: Secret,
}

impl HandshakeSecrets {
    /// `psk` is the resumption ticket secret, or `None` in a full handshake.
    pub fn derive(transcript_hash: &[u8; 32], shared_secret: &[u8; 32], psk: Option<&[u8; 32]>) -> Self {
        let mut ikm = Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(shared_secret);
        if let Some(psk) = psk {
            ikm[32..].copy_from_slice(psk);
        }
        let prk = hkdf_extract(transcript_hash, &*ikm);
        HandshakeSecrets {
            c2s: TrafficSecret(expand32(&prk, LABEL_C2S)),
            s2c: TrafficSecret(expand32(&prk, LABEL_S2C)),
            c_finished: expand32(&prk, LABEL_C_FINISHED),
            s_finished: expand32(&prk, LABEL_S_FINISHED),
            exporter: expand32(&prk, LABEL_EXPORTER),
        }
    }
}

/// Context string a user key signs for login: binds the signature to this connection.
pub const USER_AUTH_CONTEXT: &[u8] = b"im1 user auth\0";

/// The exact bytes a user key signs (RSA-PSS-SHA256) to log in as `user` on this connection.
pub fn user_auth_message(exporter: &[u8; 32], user: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(USER_AUTH_CONTEXT.len() + 32 + 1 + user.len());
    m.extend_from_slice(USER_AUTH_CONTEXT);
    m.extend_from_slice(exporter);
    m.push(user.len() as u8);
    m.extend_from_slice(user.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_and_purposes_get_distinct_keys() {
        let s = HandshakeSecrets::derive(&[1; 32], &[2; 32], None);
        let (c, sv) = (s.c2s.keys(), s.s2c.keys());
        assert_ne!(*c.enc, *sv.enc);
        assert_ne!(*c.mac, *sv.mac);
        assert_ne!(c.iv, sv.iv);
        assert_ne!(&c.enc[..32], &c.mac[..]);
        assert_ne!(*s.c_finished, *s.s_finished);
        let r = s.c2s.ratchet();
        assert_ne!(r.as_bytes(), s.c2s.as_bytes());
        // The psk changes everything.
        let p = HandshakeSecrets::derive(&[1; 32], &[2; 32], Some(&[3; 32]));
        assert_ne!(p.c2s.as_bytes(), s.c2s.as_bytes());
    }
}
