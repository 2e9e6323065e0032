//! Any bytes as SASL tokens: PLAIN, a whole SCRAM exchange (the input
//! split at its first NUL into client-first and client-final) against a
//! known user, and an OAUTHBEARER client message (its GS2 header, key-value
//! pairs and the JWT's parts) against a JWKS of one RSA key. An error is
//! fine; a panic is a bug.

#![no_main]

use std::sync::OnceLock;

use ferry_broker::security::oauthbearer::{self, JwtValidator};
use ferry_broker::security::scram::ScramServer;
use ferry_broker::security::{ScramCredential, ScramMechanism, parse_plain};
use libfuzzer_sys::fuzz_target;

fn credential() -> &'static ScramCredential {
    static C: OnceLock<ScramCredential> = OnceLock::new();
    C.get_or_init(|| ScramCredential::with_salt(ScramMechanism::Sha256, "pw", b"salt", 4096))
}

/// A JWKS with one RS256 key (a made-up 2048-bit modulus: no token
/// verifies, so the fuzzer exercises everything before the signature).
fn validator() -> &'static JwtValidator {
    static V: OnceLock<JwtValidator> = OnceLock::new();
    V.get_or_init(|| {
        let n = format!("{}xA", "x".repeat(340)); // 256 bytes, canonical base64url
        let jwks = format!(r#"{{"keys":[{{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":"{n}","e":"AQAB"}}]}}"#);
        JwtValidator::from_jwks(jwks.as_bytes(), None, None).expect("jwks")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    let _ = oauthbearer::parse_client_first(data);
    let _ = oauthbearer::authenticate(validator(), data, 1_700_000_000);
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
        if let Ok((server, _)) = ScramServer::start_with_nonce(m, first, |_| Some(credential().clone()), "srv") {
            let _ = server.finish(last);
        }
    }
});
