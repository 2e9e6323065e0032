//! Stored SCRAM credentials (RFC 5802 §3): salt, iteration count, stored
//! key and server key. The password itself is never stored; PLAIN logins
//! are checked by deriving the same keys from the offered password with
//! the stored salt.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// A SCRAM hash function, as Kafka names the mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// `SCRAM-SHA-256` (RFC 7677).
    Sha256,
    /// `SCRAM-SHA-512`.
    Sha512,
}

impl ScramMechanism {
    /// Both, strongest first.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha512, ScramMechanism::Sha256];
    /// Kafka's lower bound on iterations (and Ferry's default).
    pub const MIN_ITERATIONS: u32 = 4096;
    /// Kafka's upper bound on iterations.
    pub const MAX_ITERATIONS: u32 = 16384;

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SASL name (case-insensitive).
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        match name.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's `ScramMechanism` code (KIP-554): 1 SHA-256, 2 SHA-512.
    pub fn kafka_code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of a Kafka code.
    pub fn from_kafka_code(code: i8) -> Option<ScramMechanism> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, data)`.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        match self {
            ScramMechanism::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with HMAC of this hash.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }

    /// Length of this hash's output.
    pub fn output_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }
}

/// One user's SCRAM credential for one mechanism.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The hash function.
    pub mechanism: ScramMechanism,
    /// The salt (random, per credential).
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

// Never prints key material (logs, Debug of the image).
impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// A new credential for `password` with a random 32-byte salt.
    pub fn new(mechanism: ScramMechanism, password: &str, iterations: u32) -> ScramCredential {
        let salt: [u8; 32] = rand::random();
        ScramCredential::with_salt(mechanism, password, &salt, iterations)
    }

    /// The credential of `password` with a given salt.
    pub fn with_salt(mechanism: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> ScramCredential {
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        ScramCredential::from_salted_password(mechanism, salt, iterations, &salted)
    }

    /// The credential from a salted password, as AlterUserScramCredentials
    /// carries it (the client derived it; the password never travels).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        iterations: u32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// Whether `password` is this credential's (PLAIN): the derived stored
    /// key compared in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let salted = self.mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        constant_time_eq(&self.mechanism.hash(&client_key), &self.stored_key)
    }
}

/// A user's credentials, by mechanism.
pub type UserCredentials = BTreeMap<ScramMechanism, ScramCredential>;

/// Equality whose time depends only on the lengths, so a comparison does
/// not tell an attacker how many leading bytes of a key were right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_against_the_scram_credential() {
        for m in ScramMechanism::ALL {
            let c = ScramCredential::new(m, "s3cret", 4096);
            assert_eq!(c.stored_key.len(), m.output_len());
            assert!(c.verify_password("s3cret"));
            assert!(!c.verify_password("s3cret "));
            assert!(!c.verify_password(""));
            // Salts are random: the same password stores differently.
            assert_ne!(c.stored_key, ScramCredential::new(m, "s3cret", 4096).stored_key);
        }
        assert!(!format!("{:?}", ScramCredential::new(ScramMechanism::Sha256, "x", 4096)).contains("key"));
    }

    #[test]
    fn mechanism_names_and_codes() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_kafka_code(m.kafka_code()), Some(m));
        }
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), Some(ScramMechanism::Sha256));
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac") && !constant_time_eq(b"a", b"ab"));
    }
}
