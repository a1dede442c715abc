//! Thin wrappers over the primitive crates, so that the protocol code names operations
//! ("MAC these parts", "expand this label") rather than crate APIs, and so that the known-answer
//! tests (RFC 4231, RFC 5869) exercise exactly the code paths the protocol uses.

use base64::Engine as _;
use blowfish::Blowfish;
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Blowfish key length used by suite 1: the maximum, 448 bits.
pub const BLOWFISH_KEY_LEN: usize = 56;
/// Blowfish block (and CTR counter block) length.
pub const BLOCK_LEN: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// An HMAC-SHA-256 key with its inner and outer pads already hashed: a record's tag then
/// costs the compressions of its data and one more, not two more for the pads (a third of
/// the MAC's cost for a chat message). Held as long as a direction's expanded cipher; the
/// state is wiped on drop (the `zeroize` features of hmac and sha2).
#[derive(Clone)]
pub struct MacKey(HmacSha256);

impl MacKey {
    pub fn new(key: &[u8]) -> Self {
        MacKey(<HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    /// The tag of the concatenation of `parts`: the same as [`hmac_sha256`] with this key.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    hmac(key, parts).finalize().into_bytes().into()
}

/// Checks an HMAC-SHA-256 tag in constant time (the comparison is `verify_slice`'s).
pub fn hmac_sha256_verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    hmac(key, parts).verify_slice(tag).is_ok()
}

/// HKDF-Extract (RFC 5869) with SHA-256: a 32-byte pseudorandom key.
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    Zeroizing::new(prk.into())
}

/// HKDF-Expand (RFC 5869) with SHA-256 from a 32-byte PRK. `out` is at most 255 * 32 bytes
/// in every use here, so expansion cannot fail.
pub fn hkdf_expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::from_prk(prk).expect("a 32-byte PRK is valid for SHA-256");
    hk.expand(info, out).expect("output length is far below 255 * 32");
}

/// `SHA256:` plus unpadded base64 of SHA-256 over the SubjectPublicKeyInfo DER, the way
/// OpenSSH prints fingerprints, so users can compare them the way they are used to.
pub fn fingerprint(spki_der: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha256(&[spki_der]))
    )
}

/// Blowfish in CTR mode with a 64-bit big-endian counter, positioned by block index.
///
/// Expanding a Blowfish key costs about 30 µs and 4 KiB, so one instance lives as long as
/// its key; each record seeks to its own first counter block.
pub struct BlowfishCtr(ctr::Ctr64BE<Blowfish>);

impl BlowfishCtr {
    pub fn new(key: &[u8; BLOWFISH_KEY_LEN], iv: &[u8; BLOCK_LEN]) -> Self {
        BlowfishCtr(
            ctr::Ctr64BE::<Blowfish>::new_from_slices(key, iv)
                .expect("56-byte key and 8-byte IV are valid Blowfish-CTR parameters"),
        )
    }

    /// XORs `buf` with the keystream starting at counter block `iv + block`.
    pub fn apply(&mut self, block: u64, buf: &mut [u8]) {
        self.0.seek(block * BLOCK_LEN as u64);
        self.0.apply_keystream(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// RFC 4231 test cases 1, 2, 3, 4, 6 and 7 (case 5 is a truncated tag, which we never use).
    #[test]
    fn hmac_sha256_rfc4231() {
        let cases: &[(Vec<u8>, Vec<u8>, &str)] = &[
            (vec![0x0b; 20], b"Hi There".to_vec(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec(), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (vec![0xaa; 20], vec![0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (h("0102030405060708090a0b0c0d0e0f10111213141516171819"), vec![0xcd; 50], "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            (vec![0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            (vec![0xaa; 131], b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(), "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ];
        for (key, data, want) in cases {
            let tag = hmac_sha256(key, &[data]);
            assert_eq!(hex::encode(tag), *want);
            assert!(hmac_sha256_verify(key, &[&data[..3], &data[3..]], &tag));
            assert_eq!(MacKey::new(key).tag(&[&data[..3], &data[3..]]), tag);
            let mut bad = tag;
            bad[31] ^= 1;
            assert!(!hmac_sha256_verify(key, &[data], &bad));
        }
    }

    /// RFC 5869 test cases 1-3 (the SHA-256 ones).
    #[test]
    fn hkdf_sha256_rfc5869() {
        let cases = [
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                "000102030405060708090a0b0c",
                "f0f1f2f3f4f5f6f7f8f9",
                "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
            ),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
                "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
                "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
                "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
            ),
            (
                "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
                "",
                "",
                "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
            ),
        ];
        for (ikm, salt, info, prk_want, okm_want) in cases {
            let prk = hkdf_extract(&h(salt), &h(ikm));
            assert_eq!(hex::encode(*prk), prk_want);
            let mut okm = vec![0u8; okm_want.len() / 2];
            hkdf_expand(&prk, &h(info), &mut okm);
            assert_eq!(hex::encode(okm), okm_want);
        }
    }

    /// Seeking to a block gives the same keystream as running through to it, and the
    /// first block is plain Blowfish ECB of the IV (Eric Young's 448-bit-key vector base).
    #[test]
    fn blowfish_ctr_seeks_by_block() {
        let key = [7u8; BLOWFISH_KEY_LEN];
        let iv = [0, 0, 0, 0, 0, 0, 0, 9];
        let mut whole = vec![0u8; 64];
        BlowfishCtr::new(&key, &iv).apply(0, &mut whole);
        let mut part = vec![0u8; 24];
        BlowfishCtr::new(&key, &iv).apply(5, &mut part);
        assert_eq!(part, whole[40..]);
        // The counter is the whole 64-bit block: block 1 of IV 9 is block 0 of IV 10.
        let mut next = vec![0u8; 8];
        BlowfishCtr::new(&key, &[0, 0, 0, 0, 0, 0, 0, 10]).apply(0, &mut next);
        assert_eq!(next, whole[8..16]);
    }

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(b"");
        assert_eq!(fp, "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
    }
}
