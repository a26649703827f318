//! What kind of failure an error is, for front-ends that must answer it (an HTTP status, an exit
//! code, whether trying another model may help) without knowing every crate's variants.

/// The class of an error. Each library crate's `Error` maps every variant to one, matching
/// exhaustively, through [`Classify`]; a front-end maps a class to its answer in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The caller's input is wrong (a bad value, shape, λ, model name, file content): fix it.
    InvalidInput,
    /// Something named does not exist (a file, a repository, a model on the provider).
    NotFound,
    /// A server r2 depends on (provider, embedding server, Hub) failed or answered nonsense.
    UpstreamFailure,
    /// A server r2 depends on did not answer in time.
    UpstreamTimeout,
    /// A server r2 depends on is rate limiting (HTTP 429 after the retry policy).
    RateLimited,
    /// r2 itself is at capacity (e.g. the in-process embedder's queue is full): retry shortly.
    Overloaded,
    /// Something needed is not set up or not reachable here (no provider configured, offline and
    /// not cached, a server that cannot be reached).
    Unavailable,
    /// A bug or an environment problem (disk, threads): not the caller's doing.
    Internal,
}

/// Errors that know their [`ErrorClass`] and a message fit for a client of a server: what went
/// wrong, without hints about command-line flags (front-ends add their own).
pub trait Classify: std::error::Error {
    /// The class of this error.
    fn class(&self) -> ErrorClass;

    /// The message for a client; by default the error's `Display`, which library errors keep
    /// free of command-line hints.
    fn client_message(&self) -> String {
        self.to_string()
    }
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::InvalidInput,
        ErrorClass::NotFound,
        ErrorClass::UpstreamFailure,
        ErrorClass::UpstreamTimeout,
        ErrorClass::RateLimited,
        ErrorClass::Overloaded,
        ErrorClass::Unavailable,
        ErrorClass::Internal,
    ];
}

/// A file or folder that could not be read, written or moved: which one, and what was being
/// done. The crates that touch files wrap it in their own `Error` (r2-core itself does no I/O).
#[derive(Debug, thiserror::Error)]
#[error("{}: {action}: {source}", path.display())]
pub struct IoError {
    pub path: std::path::PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(
        path: impl Into<std::path::PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Self {
            path: path.into(),
            action,
            source,
        }
    }

    /// Internal, or NotFound when the file or folder does not exist.
    pub fn class(&self) -> ErrorClass {
        if self.source.kind() == std::io::ErrorKind::NotFound {
            ErrorClass::NotFound
        } else {
            ErrorClass::Internal
        }
    }
}
