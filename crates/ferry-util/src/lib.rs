//! Small helpers every Ferry crate shares, kept in one place so each has one
//! implementation: wall-clock time in milliseconds ([`time`]), locks that
//! survive a panicking holder ([`sync`]), atomic file replacement
//! ([`fs`]) and work deferred to the end of a burst ([`batch`]). No
//! dependencies, unless feature `ws` asks for the WebSocket server half
//! ([`ws`], tokio) that the MQTT and STOMP front-ends share, or
//! feature `reload` for reading files again on SIGHUP or change
//! ([`reload`], tokio: TLS certificates, the OAUTHBEARER JWKS).

pub mod batch;
pub mod fs;
#[cfg(feature = "reload")]
pub mod reload;
pub mod sync;
pub mod time;
#[cfg(feature = "ws")]
pub mod ws;
