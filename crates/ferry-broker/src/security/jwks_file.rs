//! The JWKS file OAUTHBEARER tokens are checked against, read again while
//! the broker runs: an identity provider rotates its signing keys, and a
//! token signed with the new key must be accepted without a restart. The
//! binary reloads it on SIGHUP or when the file changes, like the TLS
//! certificates; a file that does not parse (half written, emptied) is
//! refused and the keys read before stay in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::oauthbearer::{JwtValidator, OAuthError};

/// A [`JwtValidator`] built from a file, swappable by [`JwksFile::reload`].
#[derive(Debug)]
pub struct JwksFile {
    path: PathBuf,
    issuer: Option<String>,
    audience: Option<String>,
    current: RwLock<Arc<JwtValidator>>,
}

impl JwksFile {
    /// Reads `path`; tokens must also name `issuer` / `audience` when given.
    pub fn load(path: &Path, issuer: Option<String>, audience: Option<String>) -> Result<JwksFile, OAuthError> {
        let v = JwtValidator::load(path, issuer.clone(), audience.clone())?;
        Ok(JwksFile { path: path.to_path_buf(), issuer, audience, current: RwLock::new(Arc::new(v)) })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; logins from now on use its keys. On error the
    /// keys read before stay.
    pub fn reload(&self) -> Result<(), OAuthError> {
        let v = JwtValidator::load(&self.path, self.issuer.clone(), self.audience.clone())?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(v);
        Ok(())
    }

    /// The validator of the last successful read.
    pub fn current(&self) -> Arc<JwtValidator> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    /// A P-256 signing key and its JWK.
    struct Signer {
        key: EcdsaKeyPair,
        kid: &'static str,
    }

    impl Signer {
        fn new(kid: &'static str) -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            Signer { key, kid }
        }

        fn jwks(&self) -> String {
            let point = self.key.public_key().as_ref();
            let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]));
            format!(r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"{}","x":"{x}","y":"{y}"}}]}}"#, self.kid)
        }

        fn token(&self, sub: &str, now: i64) -> String {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, self.kid));
            let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}","exp":{}}}"#, now + 600));
            let input = format!("{header}.{claims}");
            let sig = self.key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    #[test]
    fn reload_takes_rotated_keys_and_keeps_the_old_ones_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (old, new) = (Signer::new("k1"), Signer::new("k2"));
        let now = 1_800_000_000;
        std::fs::write(&path, old.jwks()).unwrap();
        let jwks = JwksFile::load(&path, None, None).unwrap();
        assert_eq!(jwks.current().validate(&old.token("alice", now), now).unwrap(), "alice");
        assert!(jwks.current().validate(&new.token("bob", now), now).is_err(), "k2 is not known yet");

        // A half-written file is refused; the old key keeps working.
        std::fs::write(&path, r#"{"keys": ["#).unwrap();
        assert!(jwks.reload().is_err());
        assert_eq!(jwks.current().validate(&old.token("alice", now), now).unwrap(), "alice");

        // The provider rotated: the new key is taken, the old one is gone.
        std::fs::write(&path, new.jwks()).unwrap();
        jwks.reload().unwrap();
        assert_eq!(jwks.current().validate(&new.token("bob", now), now).unwrap(), "bob");
        assert!(jwks.current().validate(&old.token("alice", now), now).is_err(), "a removed key still validates");
    }
}
