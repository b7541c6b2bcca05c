//! Trace and span identifiers.
//!
//! Ids are fixed-size byte arrays, printed as lower-case hex. Parsing accepts either case, because
//! OTLP/JSON producers disagree (the specification's own example is upper case). An all-zero id is
//! invalid by the OTLP specification, so the constructors refuse it: a `TraceId` or `SpanId` that
//! exists is always a valid one.

use std::fmt;
use std::str::FromStr;

/// Why bytes or text could not become an id. Kept small: callers add the context (which field, which
/// span) themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("id is all zeros")]
    Zero,
    #[error("not hex: {0:?}")]
    NotHex(String),
}

macro_rules! id_type {
    ($name:ident, $len:expr, $what:literal) => {
        #[doc = concat!("A ", $what, " id: ", stringify!($len), " bytes, never all zeros.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn from_bytes(bytes: [u8; $len]) -> Result<Self, IdError> {
                if bytes.iter().all(|b| *b == 0) {
                    return Err(IdError::Zero);
                }
                Ok(Self(bytes))
            }

            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| IdError::Length {
                    expected: $len,
                    got: bytes.len(),
                })?;
                Self::from_bytes(arr)
            }

            /// Parses hex of either case. Exactly `2 * LEN` hex digits.
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                if text.len() != 2 * $len {
                    return Err(IdError::Length {
                        expected: $len,
                        got: text.len() / 2,
                    });
                }
                let mut out = [0u8; $len];
                hex::decode_to_slice(text, &mut out)
                    .map_err(|_| IdError::NotHex(text.chars().take(64).collect()))?;
                Self::from_bytes(out)
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; 2 * $len];
                // Cannot fail: the buffer is exactly twice the input length.
                hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }
    };
}

id_type!(TraceId, 16, "trace");
id_type!(SpanId, 8, "span");

impl TraceId {
    /// Parses a trace id, left-padding 64-bit (16 hex digit) ids to 128 bits as Zipkin and
    /// Jaeger's older clients produce them.
    pub fn from_hex_padded(text: &str) -> Result<Self, IdError> {
        if text.len() < 32 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let padded = format!("{text:0>32}");
            return Self::from_hex(&padded);
        }
        Self::from_hex(text)
    }
}

impl SpanId {
    /// Parses a span id, left-padding ids whose leading zeros a tracer dropped.
    pub fn from_hex_padded(text: &str) -> Result<Self, IdError> {
        if text.len() < 16 && !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Self::from_hex(&format!("{text:0>16}"));
        }
        Self::from_hex(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parses_either_case_and_prints_lower() {
        let id = TraceId::from_hex("5B8EFFF798038103D269B633813FC60C").unwrap();
        assert_eq!(id.to_string(), "5b8efff798038103d269b633813fc60c");
        assert_eq!(id, "5b8efff798038103d269b633813fc60c".parse().unwrap());
    }

    #[test]
    fn zero_and_wrong_length_are_refused() {
        assert_eq!(SpanId::from_slice(&[0; 8]), Err(IdError::Zero));
        assert_eq!(
            SpanId::from_slice(&[1; 7]),
            Err(IdError::Length {
                expected: 8,
                got: 7
            })
        );
        assert!(TraceId::from_hex("zz8efff798038103d269b633813fc60c").is_err());
    }

    #[test]
    fn short_trace_ids_are_left_padded() {
        let id = TraceId::from_hex_padded("d269b633813fc60c").unwrap();
        assert_eq!(id.to_string(), "0000000000000000d269b633813fc60c");
    }
}
