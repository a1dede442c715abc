//! The server's long-term RSA host key: it signs handshake transcripts (RSA-PSS-SHA256) and
//! never decrypts anything, so there is no RSA decryption oracle to attack.

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pss::{Signature, SigningKey, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::crypto::fingerprint;

/// Bits of a newly generated host key.
pub const HOST_KEY_BITS: usize = 3072;
/// Smallest and largest RSA modulus a peer accepts, for host and user keys alike.
pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_RSA_BITS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA key in PKCS#8 PEM: {0}")]
    Parse(String),
    #[error("RSA key of {0} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are accepted")]
    Size(usize),
    #[error("RSA operation failed: {0}")]
    Rsa(String),
}

/// An RSA private key used for RSA-PSS-SHA256 signatures: the server's host key, or a
/// user's login key.
pub struct RsaSigner {
    key: SigningKey<Sha256>,
    public_der: Vec<u8>,
}

impl RsaSigner {
    pub fn generate(rng: &mut (impl rand::CryptoRng + ?Sized), bits: usize) -> Result<Self, KeyError> {
        let key = PrivateKey::new(rng, bits).map_err(|e| KeyError::Rsa(e.to_string()))?;
        Self::from_key(key)
    }

    fn from_key(key: PrivateKey) -> Result<Self, KeyError> {
        let public = key.to_public_key();
        check_size(&public)?;
        let public_der = public
            .to_public_key_der()
            .map_err(|e| KeyError::Rsa(e.to_string()))?
            .into_vec();
        Ok(RsaSigner {
            key: SigningKey::new(key),
            public_der,
        })
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let key = PrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Parse(e.to_string()))?;
        Self::from_key(key)
    }

    /// PKCS#8 PEM of the private key, zeroized when dropped; write it with mode 0600.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.key
            .as_ref()
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Rsa(e.to_string()))
    }

    /// SubjectPublicKeyInfo DER of the public key: what goes on the wire and what the
    /// fingerprint is computed over.
    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_der)
    }

    pub fn sign(&self, rng: &mut (impl rand::CryptoRng + ?Sized), msg: &[u8]) -> Vec<u8> {
        self.key.sign_with_rng(rng, msg).to_vec()
    }
}

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaSigner({})", self.fingerprint())
    }
}

fn check_size(key: &PublicKey) -> Result<(), KeyError> {
    let bits = key.size() * 8;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeyError::Size(bits));
    }
    Ok(())
}

/// Verifies an RSA-PSS-SHA256 signature by the key whose SubjectPublicKeyInfo DER is `spki`.
pub fn verify_rsa_pss(spki: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    let key = PublicKey::from_public_key_der(spki).map_err(|e| KeyError::Parse(e.to_string()))?;
    check_size(&key)?;
    let sig = Signature::try_from(sig).map_err(|e| KeyError::Rsa(e.to_string()))?;
    VerifyingKey::<Sha256>::new(key)
        .verify(msg, &sig)
        .map_err(|e| KeyError::Rsa(e.to_string()))
}

/// Checks that `spki` is an acceptable RSA public key (parses, size in range).
pub fn check_public_key(spki: &[u8]) -> Result<(), KeyError> {
    let key = PublicKey::from_public_key_der(spki).map_err(|e| KeyError::Parse(e.to_string()))?;
    check_size(&key)
}

/// Convenience for tests and tools: the public key of a PEM file as SPKI DER.
pub fn public_pem_to_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let key = PublicKey::from_public_key_pem(pem).map_err(|e| KeyError::Parse(e.to_string()))?;
    Ok(key
        .to_public_key_der()
        .map_err(|e| KeyError::Rsa(e.to_string()))?
        .into_vec())
}
