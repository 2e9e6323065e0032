//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`. The password
//! is checked against the user's SCRAM credential (see `credentials.rs`).

/// Largest PLAIN token accepted.
pub const MAX_TOKEN: usize = 4096;

/// Why a PLAIN token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    /// Over [`MAX_TOKEN`] bytes.
    #[error("PLAIN token of {0} bytes is too long")]
    TooLong(usize),
    /// Not three NUL-separated UTF-8 fields with a user name.
    #[error("malformed PLAIN token")]
    Malformed,
    /// An authzid other than the user.
    #[error("PLAIN authorization id does not match the user name")]
    AuthzidMismatch,
}

/// (user, password) of a PLAIN token.
pub fn parse_plain(token: &[u8]) -> Result<(&str, &str), PlainError> {
    if token.len() > MAX_TOKEN {
        return Err(PlainError::TooLong(token.len()));
    }
    let text = std::str::from_utf8(token).map_err(|_| PlainError::Malformed)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    if user.is_empty() {
        return Err(PlainError::Malformed);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens() {
        assert_eq!(parse_plain(b"\0alice\0pw"), Ok(("alice", "pw")));
        assert_eq!(parse_plain(b"alice\0alice\0pw"), Ok(("alice", "pw")));
        assert_eq!(parse_plain(b"\0alice\0"), Ok(("alice", "")));
        assert_eq!(parse_plain(b"bob\0alice\0pw"), Err(PlainError::AuthzidMismatch));
        for bad in [&b""[..], b"alice", b"\0alice", b"\0\0pw", b"\0a\0b\0c", b"\0\xff\0pw"] {
            assert_eq!(parse_plain(bad), Err(PlainError::Malformed), "{bad:?}");
        }
        assert_eq!(parse_plain(&[0u8; MAX_TOKEN + 1]), Err(PlainError::TooLong(MAX_TOKEN + 1)));
    }
}
