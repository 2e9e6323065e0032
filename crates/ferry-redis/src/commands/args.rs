//! A command's arguments, with the checks every handler needs.

use bytes::Bytes;

use crate::error::{CmdResult, CommandError};

/// The arguments of one command; index 0 is the command name.
pub(crate) struct Args<'a> {
    name: &'a str,
    raw: &'a [Bytes],
}

impl<'a> Args<'a> {
    pub(crate) fn new(name: &'a str, raw: &'a [Bytes]) -> Args<'a> {
        Args { name, raw }
    }

    /// All arguments, the name included.
    pub(crate) fn raw(&self) -> &'a [Bytes] {
        self.raw
    }

    /// Number of arguments, the name included (Redis's arity).
    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The wrong-arity error for this command.
    pub(crate) fn arity_error(&self) -> CommandError {
        CommandError::Arity(self.name.to_ascii_lowercase())
    }

    /// At least `n` arguments, the name included.
    pub(crate) fn at_least(&self, n: usize) -> CmdResult<()> {
        if self.raw.len() < n { Err(self.arity_error()) } else { Ok(()) }
    }

    /// Exactly `n` arguments, the name included.
    pub(crate) fn exactly(&self, n: usize) -> CmdResult<()> {
        if self.raw.len() != n { Err(self.arity_error()) } else { Ok(()) }
    }

    /// Argument `i`.
    pub(crate) fn get(&self, i: usize) -> CmdResult<&'a Bytes> {
        self.raw.get(i).ok_or_else(|| self.arity_error())
    }

    /// Argument `i` as UTF-8 text.
    pub(crate) fn str(&self, i: usize) -> CmdResult<&'a str> {
        std::str::from_utf8(self.get(i)?).map_err(|_| CommandError::Syntax)
    }

    /// Argument `i` upper-cased (an option keyword).
    pub(crate) fn upper(&self, i: usize) -> CmdResult<String> {
        Ok(String::from_utf8_lossy(self.get(i)?).to_ascii_uppercase())
    }

    /// Argument `i` as an integer.
    pub(crate) fn int(&self, i: usize) -> CmdResult<i64> {
        parse_int(self.get(i)?)
    }

    /// Argument `i` as a non-negative count.
    pub(crate) fn count(&self, i: usize) -> CmdResult<usize> {
        let n = self.int(i)?;
        usize::try_from(n).map_err(|_| CommandError::err("value is out of range, must be positive"))
    }
}

/// An integer argument, Redis's error when it is not one.
pub(crate) fn parse_int(b: &[u8]) -> CmdResult<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CommandError::err("value is not an integer or out of range"))
}

/// A timeout in seconds (may be fractional) as a duration; 0 = forever.
pub(crate) fn parse_timeout(b: &[u8]) -> CmdResult<Option<std::time::Duration>> {
    let secs: f64 = std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| CommandError::err("timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(CommandError::err("timeout is negative"));
    }
    if secs == 0.0 {
        return Ok(None);
    }
    Ok(Some(std::time::Duration::from_secs_f64(secs.min(1e9))))
}

/// A BLOCK argument in milliseconds; 0 = forever.
pub(crate) fn parse_block_ms(b: &[u8]) -> CmdResult<Option<std::time::Duration>> {
    let ms = parse_int(b)?;
    if ms < 0 {
        return Err(CommandError::err("timeout is negative"));
    }
    Ok((ms > 0).then(|| std::time::Duration::from_millis(ms as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout(b"0").unwrap(), None);
        assert_eq!(parse_timeout(b"0.5").unwrap(), Some(std::time::Duration::from_millis(500)));
        assert!(parse_timeout(b"-1").is_err());
        assert!(parse_timeout(b"nan").is_err());
        assert_eq!(parse_block_ms(b"100").unwrap(), Some(std::time::Duration::from_millis(100)));
        assert!(parse_int(b"x").is_err());
    }
}
