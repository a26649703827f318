//! The API key, kept out of every printout.

use std::fmt;

/// The environment variable [`ApiKey::from_env`] reads.
pub const API_KEY_ENV: &str = "OPENROUTER_API_KEY";

/// An API key that never shows in `Debug`, `Display` or error messages: both print
/// `ApiKey(***)`.
///
/// Surrounding whitespace (e.g. the newline of a key read from a file) is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(s: impl Into<String>) -> Self {
        let s = s.into();
        let trimmed = s.trim();
        if trimmed.len() == s.len() {
            Self(s)
        } else {
            Self(trimmed.to_owned())
        }
    }

    /// The key in `OPENROUTER_API_KEY`, if that is set and not blank.
    pub fn from_env() -> Option<Self> {
        std::env::var(API_KEY_ENV)
            .ok()
            .map(Self::new)
            .filter(|key| !key.is_empty())
    }

    /// Whether the key is empty (an empty key is never sent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key itself, for building the `Authorization` header and for redaction.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}
