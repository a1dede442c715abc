//! Passwords and tickets.
//!
//! Argon2id hashing (OWASP parameters: the `argon2` crate's default, m = 19 MiB, t = 2) runs on
//! the blocking pool under a semaphore, so a login storm neither stalls the reactor nor
//! exhausts memory. An unknown user is verified against a dummy hash made at start-up, so
//! "no such user" costs exactly what "wrong password" costs and both give the same error.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::store::accounts::Ticket;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password worker stopped")]
    Worker,
}

/// Hashes and verifies passwords off the reactor.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy: Arc<str>,
}

/// Hashes a password (blocking: call from a worker thread or the admin CLI).
pub fn hash_blocking(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

impl Passwords {
    pub fn new(concurrency: usize) -> Result<Self, AuthError> {
        let mut random = [0u8; 24];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut random);
        let dummy = hash_blocking(&format!("{random:?}"))?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: dummy.into(),
        })
    }

    pub async fn hash(&self, password: zeroize::Zeroizing<String>) -> Result<String, AuthError> {
        let _permit = self.permits.acquire().await.map_err(|_| AuthError::Worker)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|_| AuthError::Worker)?
    }

    /// Checks `password` against `hash`, or against the dummy hash when the user does not
    /// exist (`hash` is `None`), which always fails after the same amount of work.
    pub async fn verify(&self, password: zeroize::Zeroizing<String>, hash: Option<String>) -> Result<bool, AuthError> {
        let _permit = self.permits.acquire().await.map_err(|_| AuthError::Worker)?;
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        let ok = tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(|_| AuthError::Worker)?;
        Ok(ok && known)
    }

    /// The dummy hash, exposed so a test can check that the unknown-user path really
    /// verifies against it.
    pub fn dummy_hash(&self) -> &str {
        &self.dummy
    }
}

pub fn verify_blocking(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// A fresh ticket for `user`'s `device`, valid for `lifetime`.
pub fn new_ticket(user: crate::store::accounts::UserId, device_id: u64, expires_ms: u64) -> Ticket {
    let mut id = [0u8; im_proto::limits::TICKET_ID_LEN];
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    let mut rng = rand::rng();
    rand::Rng::fill_bytes(&mut rng, &mut id);
    rand::Rng::fill_bytes(&mut rng, &mut *secret);
    Ticket {
        id,
        user,
        device_id,
        secret,
        expires_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[tokio::test]
    async fn unknown_users_run_the_same_verify_and_fail() {
        let p = Passwords::new(1).unwrap();
        let h = p.hash(Zeroizing::new("correct horse".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            p.verify(Zeroizing::new("correct horse".into()), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!p.verify(Zeroizing::new("wrong".into()), Some(h)).await.unwrap());
        // The unknown-user path verifies against a real Argon2id hash with the same
        // parameters, so it does the same work; and it never succeeds.
        assert!(p.dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!p.verify(Zeroizing::new("anything".into()), None).await.unwrap());
    }
}
