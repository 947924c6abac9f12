//! Sealing of secrets before they reach a row: XChaCha20-Poly1305 under the configured key,
//! with the row's identity as associated data. A sealed value is text:
//! `v1.<key id>.<base64 of nonce and ciphertext>`, so the key id sits beside each ciphertext and
//! a rotation can tell old values from new ones.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::domain::Secret;
use crate::store::StoreError;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;

/// Seals and opens secrets under one 32-byte key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `key`. Its id is the start of the key's SHA-256, which names the key without
    /// revealing anything usable about it.
    pub fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let key_id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            key_id,
        }
    }

    /// The id written beside each ciphertext.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `secret`, binding it to `context` (table, row key and column).
    ///
    /// # Errors
    /// Fails only if the cipher refuses the input, which XChaCha20-Poly1305 does not for
    /// inputs of any realistic size.
    pub fn seal(&self, secret: &Secret, context: &str) -> Result<String, StoreError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: context.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(&nonce, payload)
            .map_err(|_| StoreError::Seal)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        Ok(format!(
            "{VERSION}.{}.{}",
            self.key_id,
            BASE64.encode(bytes)
        ))
    }

    /// Opens a value sealed for `context`.
    ///
    /// # Errors
    /// [`StoreError::WrongKey`] when the value was sealed under another key;
    /// [`StoreError::Unseal`] when it is malformed, was altered or belongs to another row.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret, StoreError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(StoreError::Unseal);
        };
        if key_id != self.key_id {
            return Err(StoreError::WrongKey {
                expected: self.key_id.clone(),
                found: key_id.to_owned(),
            });
        }
        let bytes = BASE64.decode(body).map_err(|_| StoreError::Unseal)?;
        if bytes.len() < NONCE_LEN {
            return Err(StoreError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| StoreError::Unseal)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| StoreError::Unseal)
    }
}

/// A new random key, for `linkbot keygen` and for the key file.
pub fn generate_key() -> [u8; 32] {
    XChaCha20Poly1305::generate_key(&mut OsRng).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&[byte; 32])
    }

    #[test]
    fn a_sealed_secret_opens_in_its_own_row() {
        let secret = Secret::new("EwAsecret-access-token");
        let sealed = sealer(1).seal(&secret, "links:42:access_token").unwrap();

        assert!(!sealed.contains("EwAsecret"));
        assert_eq!(
            sealer(1).open(&sealed, "links:42:access_token").unwrap(),
            secret
        );
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let sealed = sealer(1)
            .seal(&Secret::new("rt"), "links:42:refresh_token")
            .unwrap();

        let moved = sealer(1).open(&sealed, "links:43:refresh_token");

        assert!(matches!(moved, Err(StoreError::Unseal)));
    }

    #[test]
    fn the_wrong_key_is_named_not_decrypted_into_garbage() {
        let sealed = sealer(1).seal(&Secret::new("rt"), "ctx").unwrap();

        let err = sealer(2).open(&sealed, "ctx").unwrap_err();

        assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
        assert!(err.to_string().contains("LINKBOT_SECRET_KEY"));
    }

    #[test]
    fn tampering_is_detected() {
        let sealed = sealer(1).seal(&Secret::new("rt"), "ctx").unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();

        assert!(matches!(
            sealer(1).open(&tampered, "ctx"),
            Err(StoreError::Unseal)
        ));
        assert!(matches!(
            sealer(1).open("plain text", "ctx"),
            Err(StoreError::Unseal)
        ));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let secret = Secret::new("same");
        assert_ne!(
            sealer(1).seal(&secret, "c").unwrap(),
            sealer(1).seal(&secret, "c").unwrap()
        );
    }
}
