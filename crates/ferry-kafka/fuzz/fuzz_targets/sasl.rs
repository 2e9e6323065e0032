//! Any bytes as SASL tokens: PLAIN, and a whole SCRAM exchange (the
//! input split at its first NUL into client-first and client-final),
//! against a known user. An error is fine; a panic is a bug.

#![no_main]

use std::sync::OnceLock;

use ferry_broker::security::scram::ScramServer;
use ferry_broker::security::{ScramCredential, ScramMechanism, parse_plain};
use libfuzzer_sys::fuzz_target;

fn credential() -> &'static ScramCredential {
    static C: OnceLock<ScramCredential> = OnceLock::new();
    C.get_or_init(|| ScramCredential::with_salt(ScramMechanism::Sha256, "pw", b"salt", 4096))
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
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
