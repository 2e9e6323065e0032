//! TLS for Ferry's listeners (rustls on the `ring` provider).
//!
//! - [`TlsServer`]: the certificate chain and key from PEM files, an
//!   optional client CA (then every client must present a certificate it
//!   signed), reloaded on SIGHUP or when a file changes without touching
//!   open connections ([`resolver::ReloadingResolver`] swaps the key that
//!   new handshakes use).
//! - [`MaybeTls`]: a plain or TLS stream, so front-ends stay generic over
//!   one type; [`TlsServer::accept`] runs the handshake under a timeout.
//! - [`PrincipalMapper`]: client certificate subject -> principal name,
//!   with Kafka's `ssl.principal.mapping.rules` syntax.
//! - [`Listen`]: a listener address `HOST:PORT` or `tls://HOST:PORT`.
//! - [`PeerTls`]: mutual TLS between cluster nodes (both sides of the
//!   cluster port).
//! - [`send_file`] / [`copy_file`]: a file range (segment data) to a plain
//!   socket by `sendfile`, or read and written through TLS.

mod accept;
mod dn;
mod error;
mod file_range;
mod listen;
mod mapping;
mod peer;
mod pem;
pub mod resolver;
mod server;
mod stream;

pub use accept::{AcceptAll, Accepted};
pub use dn::subject_dn;
pub use error::TlsError;
pub use file_range::{COPY_CHUNK, copy_file, send_file};
pub use listen::{Listen, parse_listeners};
pub use mapping::PrincipalMapper;
pub use peer::PeerTls;
pub use pem::{load_certs, load_key, roots};
pub use server::{HANDSHAKE_TIMEOUT, TlsFiles, TlsServer};
pub use stream::MaybeTls;

/// The rustls crates, for callers that build clients (tests, cluster dialing).
pub use {rustls, tokio_rustls};

#[cfg(test)]
mod tests;
