//! Transaction identifiers.

use std::fmt;
use std::str::FromStr;

/// Identifies one transaction, across coordinator instances and restarts.
///
/// Participants key their idempotency on this id, so it must never repeat.
/// The upper 64 bits are a random nonce chosen when a coordinator is created
/// (from the operating system's random source), the lower 64 bits a sequence
/// number within that coordinator. Two coordinators — in one process, in two
/// processes, or before and after a restart — therefore hand out disjoint
/// ids unless their 64-bit nonces collide.
///
/// The id is `Copy`, 16 bytes, and prints as 32 lowercase hex digits in the
/// familiar UUID grouping; [`FromStr`] accepts that form with or without
/// hyphens. With serde it is a string in the same form.
///
/// ```
/// use dtxn::TransactionId;
///
/// let id: TransactionId = "0123456789abcdef-0000000000000001".parse()?;
/// assert_eq!(id.to_string(), "01234567-89ab-cdef-0000-000000000001");
/// assert_eq!(id.to_string().parse::<TransactionId>()?, id);
/// # Ok::<(), dtxn::ParseTransactionIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(u128);

impl TransactionId {
    /// Builds an id from a coordinator nonce and a sequence number.
    pub(crate) const fn from_parts(nonce: u64, sequence: u64) -> Self {
        Self(((nonce as u128) << 64) | sequence as u128)
    }

    /// The id as a 128-bit integer.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds an id from [`as_u128`](Self::as_u128).
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// The sequence number within the coordinator that issued the id.
    pub(crate) const fn sequence(self) -> u64 {
        self.0 as u64
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransactionId({self})")
    }
}

/// The text given to [`TransactionId::from_str`] was not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transaction id {input:?}: expected 32 hex digits, optionally hyphenated")]
pub struct ParseTransactionIdError {
    input: String,
}

impl FromStr for TransactionId {
    type Err = ParseTransactionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTransactionIdError {
            input: s.chars().take(64).collect(),
        };
        let mut value: u128 = 0;
        let mut digits = 0;
        for c in s.chars() {
            if c == '-' {
                continue;
            }
            let d = c.to_digit(16).ok_or_else(err)?;
            digits += 1;
            if digits > 32 {
                return Err(err());
            }
            value = (value << 4) | d as u128;
        }
        if digits != 32 {
            return Err(err());
        }
        Ok(Self(value))
    }
}

impl serde::Serialize for TransactionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TransactionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TransactionId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a transaction id of 32 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TransactionId, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A random 64-bit nonce for a new coordinator instance.
pub(crate) fn instance_nonce() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_ok() {
        return u64::from_le_bytes(buf);
    }
    // The OS random source is unavailable: fall back to a process-seeded hash
    // of the time and process id, still different across restarts.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = TransactionId::from_parts(u64::MAX - 7, 42);
        assert_eq!(id.to_string().parse::<TransactionId>().unwrap(), id);
        assert_eq!(id.sequence(), 42);
    }

    #[test]
    fn parse_rejects_bad_input() {
        for bad in ["", "xyz", "0123", &"0".repeat(33), &"g".repeat(32)] {
            assert!(bad.parse::<TransactionId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_uses_the_display_form() {
        let id = TransactionId::from_parts(1, 2);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TransactionId>(&json).unwrap(), id);
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(instance_nonce(), instance_nonce());
    }
}
