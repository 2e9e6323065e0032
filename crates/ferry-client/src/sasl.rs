//! The client side of SASL: SaslHandshake v1, then SaslAuthenticate with
//! PLAIN or SCRAM-SHA-256/512 (RFC 5802; the server's signature is checked,
//! so a broker that does not know the password cannot pass for one that does).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use sha2::{Digest, Sha256, Sha512};

use crate::conn::Connection;
use crate::error::{ClientError, check_with_message};

/// A login: the mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`),
/// user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// SASL mechanism name.
    pub mechanism: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Hash::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

fn failed(conn: &Connection, why: impl Into<String>) -> ClientError {
    ClientError::Connect(conn.addr().to_string(), format!("SASL authentication failed: {}", why.into()))
}

/// Logs in on a connection that has just agreed API versions.
pub(crate) async fn login(conn: &Connection, login: &SaslLogin) -> Result<(), ClientError> {
    let mechanism = login.mechanism.to_ascii_uppercase();
    let hash = match mechanism.as_str() {
        "PLAIN" => None,
        "SCRAM-SHA-256" => Some(Hash::Sha256),
        "SCRAM-SHA-512" => Some(Hash::Sha512),
        m => return Err(failed(conn, format!("unsupported mechanism {m}"))),
    };
    let hs =
        conn.send(SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.clone())), 1).await?;
    check_with_message(hs.error_code, None, || {
        let offered: Vec<&str> = hs.mechanisms.iter().map(StrBytes::as_str).collect();
        format!("SaslHandshake {mechanism} (the broker offers {offered:?})")
    })?;
    let step = |token: Vec<u8>| async move {
        let r = conn.send(SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)), 2).await?;
        check_with_message(r.error_code, r.error_message.as_ref(), || "SaslAuthenticate".to_string())?;
        Ok::<Bytes, ClientError>(r.auth_bytes)
    };
    let Some(hash) = hash else {
        step(format!("\0{}\0{}", login.user, login.password).into_bytes()).await?;
        return Ok(());
    };
    let nonce = B64.encode(rand::random::<[u8; 24]>());
    let bare = format!("n={},r={nonce}", login.user.replace('=', "=3D").replace(',', "=2C"));
    let first = step(format!("n,,{bare}").into_bytes()).await?;
    let first = String::from_utf8(first.to_vec()).map_err(|_| failed(conn, "server-first is not UTF-8"))?;
    let (mut full_nonce, mut salt, mut iterations) = (None, None, None);
    for attr in first.split(',') {
        match attr.split_once('=') {
            Some(("r", v)) => full_nonce = Some(v),
            Some(("s", v)) => salt = B64.decode(v).ok(),
            Some(("i", v)) => iterations = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    let (Some(full_nonce), Some(salt), Some(iterations)) = (full_nonce, salt, iterations) else {
        return Err(failed(conn, "malformed server-first"));
    };
    if !full_nonce.starts_with(&nonce) || full_nonce.len() == nonce.len() || !(1..=1_000_000).contains(&iterations) {
        return Err(failed(conn, "server-first with a bad nonce or iteration count"));
    }
    let salted = hash.salted(login.password.as_bytes(), &salt, iterations);
    let client_key = hash.hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={full_nonce}");
    let auth_message = format!("{bare},{first},{without_proof}");
    let signature = hash.hmac(&hash.hash(&client_key), auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
    let last = step(format!("{without_proof},p={}", B64.encode(proof)).into_bytes()).await?;
    let server_signature = hash.hmac(&hash.hmac(&salted, b"Server Key"), auth_message.as_bytes());
    if last.as_ref() != format!("v={}", B64.encode(server_signature)).as_bytes() {
        return Err(failed(conn, "the broker's SCRAM signature is wrong"));
    }
    Ok(())
}
