use std::path::PathBuf;

use crate::joblib::JoblibError;

/// The result type of `r2-checkpoints`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when reading a pool config, a router checkpoint or upstream joblib files.
///
/// Every variant names the file, and where it helps the tensor, line or byte offset, and says what
/// to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// No converted router where one was looked for.
    #[error(
        "no converted router at {}: convert the upstream checkpoints with \
         `cargo xtask convert-checkpoints --from <upstream r2_router folder> --out {}`, or point \
         --checkpoints / $R2_CHECKPOINTS at a folder holding {}",
        path.display(), dir.display(), crate::ROUTER_FILE
    )]
    RouterNotFound { path: PathBuf, dir: PathBuf },

    /// A JSON file (pool config) is not valid JSON or does not have the expected fields.
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A pool config parsed but holds a value r2 cannot use.
    #[error("{}: {message}", path.display())]
    InvalidConfig { path: PathBuf, message: String },

    /// The safetensors container itself is damaged (header, offsets, sizes).
    #[error("{}: not a readable safetensors file ({message}); convert the checkpoints again", path.display())]
    Safetensors { path: PathBuf, message: String },

    /// The metadata of a router file is missing a key or holds a bad value.
    #[error("{}: metadata `{key}`: {message}", path.display())]
    Metadata {
        path: PathBuf,
        key: &'static str,
        message: String,
    },

    /// A tensor the layout requires is absent.
    #[error("{}: tensor `{tensor}` is missing", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    /// A tensor the layout does not know is present.
    #[error("{}: unexpected tensor `{tensor}`: this is not an r2 router file of format version {}", path.display(), crate::FORMAT_VERSION)]
    UnexpectedTensor { path: PathBuf, tensor: String },

    /// A tensor has another dtype than the layout requires.
    #[error("{}: tensor `{tensor}` has dtype {got}, expected {expected}", path.display())]
    TensorDtype {
        path: PathBuf,
        tensor: String,
        expected: &'static str,
        got: String,
    },

    /// A tensor has another shape than the layout requires.
    #[error("{}: tensor `{tensor}` has shape {got:?}, expected {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A tensor holds NaN or an infinity.
    #[error("{}: tensor `{tensor}` value {index} is not finite ({value})", path.display())]
    NonFinite {
        path: PathBuf,
        tensor: String,
        index: usize,
        value: f32,
    },

    /// A model of the pool config has no heads in the router file.
    #[error(
        "{}: model `{model}` of the pool config has no heads in this router (it has: {}); \
         remove it from the config or use a router trained for it",
        path.display(), available.join(", ")
    )]
    ModelNotInRouter {
        path: PathBuf,
        model: String,
        available: Vec<String>,
    },

    /// The pool config and the router disagree on the embedding dimension.
    #[error("{}: the router takes {router}-d embeddings but the pool config says {config}", path.display())]
    DimensionMismatch {
        path: PathBuf,
        router: usize,
        config: usize,
    },

    /// An upstream joblib file could not be imported.
    #[error(transparent)]
    Joblib(#[from] JoblibError),

    /// Upstream heads do not fit together (budgets, dimensions).
    #[error("{}: {message}", path.display())]
    Upstream { path: PathBuf, message: String },

    /// The core rejected the assembled router.
    #[error("{}: {source}", path.display())]
    Core {
        path: PathBuf,
        #[source]
        source: r2_core::Error,
    },
}

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, err: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its message; the variant says it once.
        let message = crate::pool::without_position(err);
        Error::Json {
            path: path.into(),
            line: err.line(),
            column: err.column(),
            message,
        }
    }
}
