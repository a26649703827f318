use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// The output-token budget given to a model: a number of tokens, or none ("unlimited").
///
/// Serialises as upstream prints it: an integer, or the string `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Budget {
    /// The model is told to answer in at most this many tokens.
    Tokens(u32),
    /// No budget prompt.
    Unlimited,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Tokens(n) => write!(f, "{n}"),
            Budget::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl std::str::FromStr for Budget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "unlimited" {
            return Ok(Budget::Unlimited);
        }
        s.parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .map(Budget::Tokens)
            .ok_or_else(|| {
                format!("a budget is a positive number of tokens or `unlimited`, got `{s}`")
            })
    }
}

impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Budget::Tokens(n) => serializer.serialize_u32(*n),
            Budget::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Budget;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive integer number of tokens or \"unlimited\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Budget, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|&n| n > 0)
                    .map(Budget::Tokens)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Budget, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Budget, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
