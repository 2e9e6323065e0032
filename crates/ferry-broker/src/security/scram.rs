//! The SCRAM server (RFC 5802, RFC 7677), as Kafka speaks it: no channel
//! binding (`n,,` or `y,,`), an optional authzid that must name the user,
//! and Kafka's `tokenauth` extension (delegation tokens) refused, other
//! extensions ignored. Two steps: [`ScramServer::start`] takes the
//! client-first message and answers server-first; [`ScramServer::finish`]
//! takes client-final, checks the proof in constant time and answers
//! server-final. Malformed or hostile input is an error, never a panic.
//!
//! An unknown user gets a server-first like a known one (a salt derived
//! from the name with a per-process key) and fails at the proof, so the
//! exchange does not tell which users exist (RFC 5802 §5.1).

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::credentials::{ScramCredential, ScramMechanism, constant_time_eq};

/// Largest SCRAM message accepted (the real ones are under 300 bytes).
pub const MAX_MESSAGE: usize = 4096;

/// Why an exchange failed. The text is safe to log and to send: it holds
/// no key material and does not say whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message over [`MAX_MESSAGE`] bytes.
    #[error("SCRAM message of {0} bytes is too long")]
    TooLong(usize),
    /// Not SCRAM's syntax.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding (`p=`) was asked for; Ferry does not offer it.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// `tokenauth=true`: delegation tokens are not supported.
    #[error("SCRAM delegation token authentication is not supported")]
    TokenAuth,
    /// An authzid other than the user.
    #[error("SCRAM authorization id does not match the user name")]
    AuthzidMismatch,
    /// client-final echoed another nonce.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// client-final's channel-binding echo differs from client-first's header.
    #[error("SCRAM channel-binding echo mismatch")]
    BindingMismatch,
    /// Wrong password or unknown user (one answer for both).
    #[error("Authentication failed during authentication due to invalid credentials with SASL mechanism {0}")]
    Failed(&'static str),
}

/// An exchange after server-first, waiting for client-final.
pub struct ScramServer {
    mechanism: ScramMechanism,
    username: String,
    credential: Option<ScramCredential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// Length of the client's part at the start of `nonce`.
    client_nonce_len: usize,
}

/// A finished exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSuccess {
    /// The authenticated user.
    pub username: String,
    /// server-final (`v=...`), to send to the client.
    pub server_final: Vec<u8>,
}

impl ScramServer {
    /// Takes client-first; `lookup` finds the user's credential for this
    /// mechanism. Returns the exchange and server-first.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let nonce: [u8; 24] = rand::random();
        Self::start_with_nonce(mechanism, client_first, lookup, &B64.encode(nonce))
    }

    /// [`start`](Self::start) with a given server nonce (tests, the RFC vector).
    pub fn start_with_nonce(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        let text = text(client_first)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel-binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
        let authzid = match authzid {
            "" => None,
            a => Some(decode_name(a.strip_prefix("a=").ok_or(ScramError::Malformed("bad authzid"))?)?),
        };
        let gs2_header = text[..text.len() - bare.len()].to_string();
        let mut attrs = bare.split(',');
        let user = attrs.next().and_then(|a| a.strip_prefix("n=")).ok_or(ScramError::Malformed("no user name"))?;
        let username = decode_name(user)?;
        if username.is_empty() {
            return Err(ScramError::Malformed("empty user name"));
        }
        if authzid.is_some_and(|a| a != username) {
            return Err(ScramError::AuthzidMismatch);
        }
        let client_nonce =
            attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("no client nonce"))?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        for ext in attrs {
            let (key, value) = ext.split_once('=').ok_or(ScramError::Malformed("bad extension"))?;
            if key == "m" {
                return Err(ScramError::Malformed("unsupported mandatory extension"));
            }
            if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
                return Err(ScramError::TokenAuth);
            }
        }
        let credential = lookup(&username).filter(|c| c.mechanism == mechanism);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt(mechanism, &username), ScramMechanism::MIN_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let server = ScramServer {
            mechanism,
            username,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            client_nonce_len: client_nonce.len(),
            nonce,
        };
        Ok((server, server_first.into_bytes()))
    }

    /// librdkafka before 2.6.1 (Debian's kcat, many distributions) sends
    /// its client nonce followed by the whole combined nonce, so the client
    /// part twice (librdkafka #4895; Kafka 3.8.1 to 3.9 accepted it). Exactly
    /// that form is taken: the server's part is still echoed in full, so a
    /// replayed client-final still fails.
    fn doubled_client_nonce(&self, nonce: &str) -> bool {
        let client = &self.nonce[..self.client_nonce_len];
        nonce.len() == self.nonce.len() + client.len() && nonce.starts_with(client) && nonce.ends_with(&self.nonce)
    }

    /// The user client-first named (not yet authenticated).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Takes client-final, checks the proof and returns server-final.
    pub fn finish(self, client_final: &[u8]) -> Result<ScramSuccess, ScramError> {
        let text = text(client_final)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding =
            attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Malformed("no channel binding"))?;
        let binding = B64.decode(binding).map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("no nonce"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::BindingMismatch);
        }
        if nonce != self.nonce && !self.doubled_client_nonce(nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let failed = ScramError::Failed(self.mechanism.name());
        let Some(credential) = &self.credential else { return Err(failed) };
        if proof.len() != self.mechanism.output_len() {
            return Err(failed);
        }
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let client_signature = self.mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&self.mechanism.hash(&client_key), &credential.stored_key) {
            return Err(failed);
        }
        let server_signature = self.mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        Ok(ScramSuccess {
            username: self.username,
            server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
        })
    }
}

fn text(message: &[u8]) -> Result<&str, ScramError> {
    if message.len() > MAX_MESSAGE {
        return Err(ScramError::TooLong(message.len()));
    }
    std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// A saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is invalid.
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i..i + 3).ok_or(ScramError::Malformed("bad escape in name"))?;
        out.push(match escape {
            "=2C" | "=2c" => ',',
            "=3D" | "=3d" => '=',
            _ => return Err(ScramError::Malformed("bad escape in name")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Encodes a name as a saslname (the client side).
pub fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Printable ASCII but `,` (RFC 5802's `printable`), non-empty.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A stable salt for a user that does not exist, from a per-process key.
fn fake_salt(mechanism: ScramMechanism, username: &str) -> Vec<u8> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    mechanism.hmac(key, username.as_bytes())[..32].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(m: ScramMechanism, password: &str, salt: &[u8]) -> ScramCredential {
        ScramCredential::with_salt(m, password, salt, 4096)
    }

    /// A client for the tests: client-final for a server-first.
    fn client_final(m: ScramMechanism, password: &str, client_first_bare: &str, server_first: &str) -> String {
        client_final_with_nonce(m, password, client_first_bare, server_first, None)
    }

    /// As [`client_final`], echoing `echo` instead of the server's nonce.
    fn client_final_with_nonce(
        m: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        echo: Option<&str>,
    ) -> String {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for a in server_first.split(',') {
            match a.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = B64.decode(v).unwrap(),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={}", echo.unwrap_or(nonce));
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.hmac(&m.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc7677_sha256_test_vector() {
        let m = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = credential(m, "pencil", &salt);
        let (server, first) = ScramServer::start_with_nonce(
            m,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| cred.clone()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let done = server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(done.username, "user");
        assert_eq!(String::from_utf8(done.server_final).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn the_doubled_client_nonce_of_old_librdkafka_is_taken_and_nothing_else() {
        let m = ScramMechanism::Sha512;
        let cred = ScramCredential::new(m, "pw", 4096);
        let bare = "n=u,r=cnonce";
        // librdkafka < 2.6.1 sends client nonce + (client nonce + server nonce).
        for (sent, ok) in [
            ("cnonceSN", true),
            ("cnoncecnonceSN", true),
            ("xxxxxxcnonceSN", false),
            ("cnoncecnonceSX", false),
            ("cnonceSNcnonce", false),
            ("cnoncecnoncecnonceSN", false),
        ] {
            let (server, first) =
                ScramServer::start_with_nonce(m, format!("n,,{bare}").as_bytes(), |_| Some(cred.clone()), "SN")
                    .unwrap();
            let fin = client_final_with_nonce(m, "pw", bare, std::str::from_utf8(&first).unwrap(), Some(sent));
            let result = server.finish(fin.as_bytes());
            assert_eq!(result.is_ok(), ok, "{sent}: {result:?}");
            if !ok {
                assert_eq!(result.unwrap_err(), ScramError::NonceMismatch);
            }
        }
    }

    #[test]
    fn sha512_round_trip_and_wrong_password() {
        let m = ScramMechanism::Sha512;
        let cred = ScramCredential::new(m, "right", 4096);
        for (password, ok) in [("right", true), ("wrong", false)] {
            let bare = "n=al=2Cice,r=abcdef";
            let (server, first) =
                ScramServer::start(m, format!("n,,{bare}").as_bytes(), |u| (u == "al,ice").then(|| cred.clone()))
                    .unwrap();
            assert_eq!(server.username(), "al,ice");
            let fin = client_final(m, password, bare, std::str::from_utf8(&first).unwrap());
            let result = server.finish(fin.as_bytes());
            assert_eq!(result.is_ok(), ok, "{result:?}");
            if !ok {
                assert_eq!(result.unwrap_err(), ScramError::Failed("SCRAM-SHA-512"));
            }
        }
    }

    #[test]
    fn unknown_user_looks_like_a_known_one_until_the_proof() {
        let m = ScramMechanism::Sha256;
        let (server, first) = ScramServer::start(m, b"n,,n=ghost,r=xyz", |_| None).unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(first.contains(",s=") && first.ends_with(",i=4096"));
        // The same salt every time: probing twice does not tell either.
        let (_, again) = ScramServer::start(m, b"n,,n=ghost,r=xyz", |_| None).unwrap();
        assert_eq!(first.split(',').nth(1), String::from_utf8(again).unwrap().split(',').nth(1));
        let fin = client_final(m, "anything", "n=ghost,r=xyz", &first);
        assert_eq!(server.finish(fin.as_bytes()).unwrap_err(), ScramError::Failed("SCRAM-SHA-256"));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let m = ScramMechanism::Sha256;
        let cred = ScramCredential::new(m, "pw", 4096);
        let lookup = |_: &str| Some(cred.clone());
        let refused: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"x,,n=u,r=a",
            b"p=tls-unique,,n=u,r=a",
            b"n,,",
            b"n,,r=a",
            b"n,,n=u",
            b"n,,n=,r=a",
            b"n,,n=u=,r=a",
            b"n,,n=u=2,r=a",
            b"n,,n=u,r=",
            b"n,,n=u,r=a b",
            b"n,,n=u,r=a,m=x",
            b"n,,n=u,r=a,tokenauth=true",
            b"n,,n=u,r=a,novalue",
            b"n,a=other,n=u,r=a",
            b"n,b=u,n=u,r=a",
            b"\xff\xfe,,n=u,r=a",
        ];
        for msg in refused {
            assert!(ScramServer::start(m, msg, lookup).is_err(), "{:?}", String::from_utf8_lossy(msg));
        }
        let long = format!("n,,n=u,r={}", "a".repeat(MAX_MESSAGE));
        assert_eq!(ScramServer::start(m, long.as_bytes(), lookup).err(), Some(ScramError::TooLong(long.len())));
        // Other extensions are ignored; a matching authzid is fine.
        assert!(ScramServer::start(m, b"n,a=u,n=u,r=a,tokenauth=false,foo=bar", lookup).is_ok());
        assert!(ScramServer::start(m, b"y,,n=u,r=a", lookup).is_ok());

        let start = || ScramServer::start_with_nonce(m, b"n,,n=u,r=cn", lookup, "sn").unwrap().0;
        let good_proof = B64.encode([0u8; 32]);
        let finals: Vec<(String, ScramError)> = vec![
            ("".into(), ScramError::Malformed("no proof")),
            ("c=biws,r=cnsn".into(), ScramError::Malformed("no proof")),
            (format!("r=cnsn,p={good_proof}"), ScramError::Malformed("no channel binding")),
            (format!("c=!!,r=cnsn,p={good_proof}"), ScramError::Malformed("channel binding is not base64")),
            (format!("c=biws,p={good_proof}"), ScramError::Malformed("no nonce")),
            (format!("c=eSws,r=cnsn,p={good_proof}"), ScramError::BindingMismatch),
            (format!("c=biws,r=cnXX,p={good_proof}"), ScramError::NonceMismatch),
            (format!("c=biws,r=cn,p={good_proof}"), ScramError::NonceMismatch),
            ("c=biws,r=cnsn,p=%%%".into(), ScramError::Malformed("proof is not base64")),
            ("c=biws,r=cnsn,p=AAAA".into(), ScramError::Failed("SCRAM-SHA-256")),
            (format!("c=biws,r=cnsn,p={good_proof}"), ScramError::Failed("SCRAM-SHA-256")),
        ];
        for (fin, want) in finals {
            assert_eq!(start().finish(fin.as_bytes()).unwrap_err(), want, "{fin}");
        }
        assert!(matches!(start().finish(&vec![b'c'; MAX_MESSAGE + 1]), Err(ScramError::TooLong(_))));
    }
}
