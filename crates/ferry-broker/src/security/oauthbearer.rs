//! SASL OAUTHBEARER (RFC 7628 as Kafka speaks it, KIP-255): the client's
//! one message `n,[a=authzid],\x01auth=Bearer <jwt>\x01[key=value\x01]*\x01`
//! carries a JWT, which is checked against the keys of a JWKS file:
//! RS256 (RSA PKCS#1 v1.5, SHA-256) or ES256 (ECDSA P-256, SHA-256)
//! signatures, `exp` (required) and `nbf` with Kafka's 30 s clock skew,
//! optional expected `iss` and `aud`, and `sub` as the principal name.
//!
//! The validator is our own (about 200 lines) on `ring`, which rustls
//! already brings: a JWT library would add a second crypto stack (see
//! docs/security.md). `alg: none` and HMAC algorithms are refused (a
//! public JWKS key must not double as an HMAC secret).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// Kafka's `sasl.oauthbearer.clock.skew.seconds` default.
pub const CLOCK_SKEW_SECS: i64 = 30;

/// Why a token or a JWKS file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The SASL message is not KIP-255's client first message.
    #[error("malformed OAUTHBEARER message: {0}")]
    Message(&'static str),
    /// The token is not a well-formed JWS compact serialisation.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// An algorithm other than RS256 and ES256.
    #[error("JWT algorithm {0:?} is not accepted (RS256, ES256)")]
    Algorithm(String),
    /// No key of the JWKS verifies the signature.
    #[error("JWT signature does not verify with any key of the JWKS")]
    Signature,
    /// `exp` is missing or past.
    #[error("JWT expired or without exp")]
    Expired,
    /// `nbf` is in the future.
    #[error("JWT not valid yet (nbf)")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("JWT issuer does not match")]
    Issuer,
    /// `aud` does not name the configured audience.
    #[error("JWT audience does not match")]
    Audience,
    /// No `sub`, or an authzid other than `sub`.
    #[error("JWT subject: {0}")]
    Subject(&'static str),
    /// The JWKS file is unusable.
    #[error("JWKS: {0}")]
    Jwks(String),
}

#[derive(Debug, Clone)]
enum KeyMaterial {
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point (0x04 || x || y).
    P256(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Jwk {
    kid: Option<String>,
    key: KeyMaterial,
}

/// The JWKS keys and the claims every token must satisfy.
#[derive(Debug, Clone)]
pub struct JwtValidator {
    keys: Vec<Jwk>,
    issuer: Option<String>,
    audience: Option<String>,
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, OAuthError> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| OAuthError::Malformed(what))
}

impl JwtValidator {
    /// Reads a JWKS file (`{"keys": [...]}`); keys of other types, curves
    /// or uses (`use` other than `sig`) are skipped, none usable is an error.
    pub fn load(path: &Path, issuer: Option<String>, audience: Option<String>) -> Result<JwtValidator, OAuthError> {
        let text = std::fs::read(path).map_err(|e| OAuthError::Jwks(format!("reading {}: {e}", path.display())))?;
        JwtValidator::from_jwks(&text, issuer, audience).map_err(|e| {
            let why = match e {
                OAuthError::Jwks(why) => why,
                other => other.to_string(),
            };
            OAuthError::Jwks(format!("{}: {why}", path.display()))
        })
    }

    /// Parses a JWKS document.
    pub fn from_jwks(
        json: &[u8],
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<JwtValidator, OAuthError> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| OAuthError::Jwks(format!("not JSON: {e}")))?;
        let list =
            doc.get("keys").and_then(Value::as_array).ok_or_else(|| OAuthError::Jwks("no \"keys\" array".into()))?;
        let field = |k: &Value, name: &str| -> Option<Vec<u8>> {
            URL_SAFE_NO_PAD.decode(k.get(name)?.as_str()?.trim_end_matches('=')).ok()
        };
        let mut keys = Vec::new();
        for k in list {
            if k.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
                continue;
            }
            let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
            let key = match (k.get("kty").and_then(Value::as_str), k.get("crv").and_then(Value::as_str)) {
                (Some("RSA"), _) => match (field(k, "n"), field(k, "e")) {
                    (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => KeyMaterial::Rsa { n, e },
                    _ => return Err(OAuthError::Jwks(format!("RSA key {kid:?} without n and e"))),
                },
                (Some("EC"), Some("P-256")) => match (field(k, "x"), field(k, "y")) {
                    (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                        KeyMaterial::P256([&[4u8][..], &x, &y].concat())
                    }
                    _ => return Err(OAuthError::Jwks(format!("P-256 key {kid:?} without 32-byte x and y"))),
                },
                _ => continue,
            };
            keys.push(Jwk { kid, key });
        }
        if keys.is_empty() {
            return Err(OAuthError::Jwks("no RSA or P-256 signing key".into()));
        }
        Ok(JwtValidator { keys, issuer, audience })
    }

    /// Checks `jwt` at `now` (seconds since the epoch); the principal name
    /// (`sub`) when it is valid.
    pub fn validate(&self, jwt: &str, now: i64) -> Result<String, OAuthError> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(OAuthError::Malformed("not three dot-separated parts"));
        };
        let header: Value =
            serde_json::from_slice(&b64(h, "header")?).map_err(|_| OAuthError::Malformed("header is not JSON"))?;
        let sig = b64(s, "signature")?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let kid = header.get("kid").and_then(Value::as_str);
        let signed = &jwt.as_bytes()[..h.len() + 1 + p.len()];
        let candidates = self.keys.iter().filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        let verified = match alg {
            "RS256" => candidates
                .filter_map(|k| match &k.key {
                    KeyMaterial::Rsa { n, e } => Some(RsaPublicKeyComponents { n, e }),
                    KeyMaterial::P256(_) => None,
                })
                .any(|key| key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig).is_ok()),
            "ES256" => candidates
                .filter_map(|k| match &k.key {
                    KeyMaterial::P256(point) => {
                        Some(UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point))
                    }
                    KeyMaterial::Rsa { .. } => None,
                })
                .any(|key| key.verify(signed, &sig).is_ok()),
            other => return Err(OAuthError::Algorithm(other.to_string())),
        };
        if !verified {
            return Err(OAuthError::Signature);
        }
        // Claims only after the signature: nothing unverified is trusted.
        let claims: Value =
            serde_json::from_slice(&b64(p, "payload")?).map_err(|_| OAuthError::Malformed("payload is not JSON"))?;
        let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t as i64);
        match time("exp") {
            Some(exp) if now < exp.saturating_add(CLOCK_SKEW_SECS) => {}
            _ => return Err(OAuthError::Expired),
        }
        if time("nbf").is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf) {
            return Err(OAuthError::NotYetValid);
        }
        if let Some(want) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(want)
        {
            return Err(OAuthError::Issuer);
        }
        if let Some(want) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == want,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(OAuthError::Audience);
            }
        }
        match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.trim().is_empty() => Ok(sub.to_string()),
            _ => Err(OAuthError::Subject("no sub claim")),
        }
    }
}

/// The token (and authzid, if given) of a client first message.
pub fn parse_client_first(message: &[u8]) -> Result<(String, Option<String>), OAuthError> {
    let text = std::str::from_utf8(message).map_err(|_| OAuthError::Message("not UTF-8"))?;
    // GS2 header: "n," (no channel binding), an optional "a=authzid", ",".
    let rest = text.strip_prefix("n,").ok_or(OAuthError::Message("expected the GS2 header n,"))?;
    let (authzid, rest) = rest.split_once(',').ok_or(OAuthError::Message("GS2 header not closed"))?;
    let authzid = match authzid {
        "" => None,
        a => Some(a.strip_prefix("a=").ok_or(OAuthError::Message("bad authzid"))?.to_string()),
    };
    let body = rest.strip_prefix('\x01').ok_or(OAuthError::Message("expected \\x01 after the GS2 header"))?;
    let body = body.strip_suffix("\x01\x01").ok_or(OAuthError::Message("not ended by \\x01\\x01"))?;
    let mut token = None;
    for kv in body.split('\x01') {
        let (key, value) = kv.split_once('=').ok_or(OAuthError::Message("a key without a value"))?;
        if key == "auth" {
            let t = value.strip_prefix("Bearer ").ok_or(OAuthError::Message("auth is not a Bearer token"))?;
            token = Some(t.trim().to_string());
        }
        // Other keys are SASL extensions (KIP-342): Ferry uses none.
    }
    let token = token.ok_or(OAuthError::Message("no auth=Bearer"))?;
    Ok((token, authzid))
}

/// A whole login: the message's token validated, an authzid (if any)
/// naming the token's subject; the principal name.
pub fn authenticate(validator: &JwtValidator, message: &[u8], now: i64) -> Result<String, OAuthError> {
    let (token, authzid) = parse_client_first(message)?;
    let sub = validator.validate(&token, now)?;
    if authzid.is_some_and(|a| a != sub) {
        return Err(OAuthError::Subject("authzid differs from sub"));
    }
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

    use super::*;

    /// A 2048-bit RSA test key (PKCS#1 DER, base64), made with `openssl
    /// genpkey` for these tests only.
    const RSA_DER: &str = include_str!("testdata/rsa2048.der.b64");

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn es_key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap()
    }

    fn es_jwk(k: &EcdsaKeyPair, kid: &str) -> Value {
        let p = k.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
    }

    fn es_token(k: &EcdsaKeyPair, kid: &str, claims: Value) -> String {
        let signed = format!("{}.{}", enc(&serde_json::json!({"alg": "ES256", "kid": kid})), enc(&claims));
        let sig = k.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn rsa_key() -> RsaKeyPair {
        let der =
            base64::engine::general_purpose::STANDARD.decode(RSA_DER.split_whitespace().collect::<String>()).unwrap();
        RsaKeyPair::from_der(&der).unwrap()
    }

    fn rs_token(k: &RsaKeyPair, claims: Value) -> String {
        let signed = format!("{}.{}", enc(&serde_json::json!({"alg": "RS256"})), enc(&claims));
        let mut sig = vec![0; k.public().modulus_len()];
        k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signed.as_bytes(), &mut sig).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn rs_jwk(k: &RsaKeyPair) -> Value {
        let c: RsaPublicKeyComponents<Vec<u8>> = k.public().into();
        serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
    }

    const NOW: i64 = 1_800_000_000;

    fn validator(keys: Vec<Value>, iss: Option<&str>, aud: Option<&str>) -> JwtValidator {
        let doc = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
        JwtValidator::from_jwks(&doc, iss.map(Into::into), aud.map(Into::into)).unwrap()
    }

    #[test]
    fn es256_and_rs256_tokens_give_their_subject() {
        let (es, rsa) = (es_key(), rsa_key());
        let v = validator(vec![es_jwk(&es, "k1"), rs_jwk(&rsa)], None, None);
        let t = es_token(&es, "k1", serde_json::json!({"sub": "alice", "exp": NOW + 60}));
        assert_eq!(v.validate(&t, NOW).unwrap(), "alice");
        let t = rs_token(&rsa, serde_json::json!({"sub": "bob", "exp": NOW + 60, "nbf": NOW - 5}));
        assert_eq!(v.validate(&t, NOW).unwrap(), "bob");
        let msg = format!("n,,\x01auth=Bearer {t}\x01\x01");
        assert_eq!(authenticate(&v, msg.as_bytes(), NOW).unwrap(), "bob");
        let msg = format!("n,a=bob,\x01host=x\x01auth=Bearer {t}\x01\x01");
        assert_eq!(authenticate(&v, msg.as_bytes(), NOW).unwrap(), "bob");
        let msg = format!("n,a=mallory,\x01auth=Bearer {t}\x01\x01");
        assert!(matches!(authenticate(&v, msg.as_bytes(), NOW), Err(OAuthError::Subject(_))));
    }

    #[test]
    fn expired_early_wrong_key_and_tampered_tokens_are_refused() {
        let (es, other) = (es_key(), es_key());
        let v = validator(vec![es_jwk(&es, "k1")], Some("https://issuer"), Some("ferry"));
        let good = serde_json::json!({"sub": "a", "exp": NOW + 60, "iss": "https://issuer", "aud": ["x", "ferry"]});
        assert_eq!(v.validate(&es_token(&es, "k1", good.clone()), NOW).unwrap(), "a");
        let with = |k: &str, val: Value| {
            let mut c = good.clone();
            c[k] = val;
            c
        };
        let expired = with("exp", (NOW - CLOCK_SKEW_SECS - 1).into());
        assert_eq!(v.validate(&es_token(&es, "k1", expired), NOW), Err(OAuthError::Expired));
        let within_skew = with("exp", (NOW - 5).into());
        assert!(v.validate(&es_token(&es, "k1", within_skew), NOW).is_ok());
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(v.validate(&es_token(&es, "k1", no_exp), NOW), Err(OAuthError::Expired));
        let early = with("nbf", (NOW + 600).into());
        assert_eq!(v.validate(&es_token(&es, "k1", early), NOW), Err(OAuthError::NotYetValid));
        assert_eq!(v.validate(&es_token(&other, "k1", good.clone()), NOW), Err(OAuthError::Signature));
        assert_eq!(v.validate(&es_token(&es, "k1", with("iss", "evil".into())), NOW), Err(OAuthError::Issuer));
        assert_eq!(v.validate(&es_token(&es, "k1", with("aud", "other".into())), NOW), Err(OAuthError::Audience));
        assert!(matches!(v.validate(&es_token(&es, "k1", with("sub", "".into())), NOW), Err(OAuthError::Subject(_))));
        // A changed payload under the old signature.
        let t = es_token(&es, "k1", good.clone());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], enc(&with("sub", "root".into())), parts[2]);
        assert_eq!(v.validate(&forged, NOW), Err(OAuthError::Signature));
        // alg none and HS256 are not accepted.
        let none = format!("{}.{}.", enc(&serde_json::json!({"alg": "none"})), enc(&good));
        assert!(matches!(v.validate(&none, NOW), Err(OAuthError::Algorithm(_))));
        let hs = format!("{}.{}.AAAA", enc(&serde_json::json!({"alg": "HS256"})), enc(&good));
        assert!(matches!(v.validate(&hs, NOW), Err(OAuthError::Algorithm(_))));
    }

    #[test]
    fn malformed_messages_tokens_and_jwks_are_errors_not_panics() {
        let es = es_key();
        let v = validator(vec![es_jwk(&es, "k1")], None, None);
        for m in [
            &b""[..],
            b"n,,",
            b"y,,\x01auth=Bearer x\x01\x01",
            b"n,,\x01auth=Bearer x\x01",
            b"n,,\x01auth=Basic x\x01\x01",
            b"n,,\x01noequals\x01\x01",
            b"n,,\x01host=a\x01\x01",
            b"\xff\xfe",
        ] {
            assert!(authenticate(&v, m, NOW).is_err(), "{m:?}");
        }
        for t in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.", "bm90IGpzb24.e30.AAAA"] {
            assert!(v.validate(t, NOW).is_err(), "{t}");
        }
        for doc in [&b"[]"[..], b"{}", b"{\"keys\": []}", b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"AAAA\"}]}", b"nope"]
        {
            assert!(JwtValidator::from_jwks(doc, None, None).is_err());
        }
        let bad_ec = br#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}"#;
        assert!(JwtValidator::from_jwks(bad_ec, None, None).is_err());
    }

    /// The fuzz target's validator (crates/ferry-kafka/fuzz/fuzz_targets/sasl.rs):
    /// a key no token verifies against loads, and hostile messages are
    /// errors, never panics.
    #[test]
    fn hostile_client_messages_are_refused() {
        let n = format!("{}xA", "x".repeat(340));
        let jwks = format!(r#"{{"keys":[{{"kty":"RSA","kid":"k1","alg":"RS256","n":"{n}","e":"AQAB"}}]}}"#);
        let v = JwtValidator::from_jwks(jwks.as_bytes(), None, None).expect("jwks");
        for m in [
            &b""[..],
            b"n,,",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,a=x,\x01auth=Bearer a.b.c\x01\x01",
            b"n,,\x01auth=Bearer eyJhbGciOiJSUzI1NiJ9..\x01\x01",
            b"\xff\xfe",
        ] {
            assert!(authenticate(&v, m, 1_700_000_000).is_err(), "{m:?}");
        }
    }
}
