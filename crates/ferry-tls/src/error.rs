//! What can go wrong setting up TLS (each names the file or rule at fault).

use std::path::PathBuf;

/// A TLS setup error.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable of the kind asked for.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was missing or malformed.
        what: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("{0}")]
    Rustls(String),
    /// A malformed `--tls-principal-mapping` rule.
    #[error("principal mapping rule {rule:?}: {why}")]
    Rule {
        /// The rule text.
        rule: String,
        /// Why it is rejected.
        why: String,
    },
    /// A malformed listener address.
    #[error("listener {0:?}: expected HOST:PORT or tls://HOST:PORT")]
    Listen(String),
}
