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

    /// No router file where one was looked for.
    #[error(
        "no router at {}: {} holds no {}; r2 reads two layouts: a folder holding {} (an r2 \
         router), or an upstream R2-Router folder holding config.json and checkpoints/",
        path.display(), dir.display(), crate::ROUTER_FILE, crate::ROUTER_FILE
    )]
    RouterNotFound { path: PathBuf, dir: PathBuf },

    /// A folder that is neither an r2 router folder nor an upstream R2-Router folder.
    #[error(
        "{}: not a router folder: r2 reads a folder holding {} (an r2 router), or an upstream \
         R2-Router folder holding config.json and checkpoints/; {}",
        dir.display(), crate::ROUTER_FILE, found_text(found, *more)
    )]
    NoRouterLayout {
        dir: PathBuf,
        /// The folder's first entries, sorted (folders end in `/`).
        found: Vec<String>,
        /// How many more entries the folder has.
        more: usize,
    },

    /// An upstream folder none of whose models has its checkpoint files.
    #[error(
        "no checkpoints found in {}: none of the {} models of config.json has its \
         limited_score_predictors.joblib (looked for {}); copy the upstream checkpoints/ folder \
         there, or fix `checkpoint_dir` in config.json",
        dir.display(), looked_for.len(), looked_text(looked_for)
    )]
    NoCheckpoints {
        /// The `checkpoints/` folder.
        dir: PathBuf,
        /// The `limited_score_predictors.joblib` path of every model of the config.
        looked_for: Vec<PathBuf>,
    },

    /// A `SHA256SUMS` file is not in sha256sum's format.
    #[error(
        "{}: line {line}: {message}; fix the line or remove the file (it is only used to check \
         the files next to it)",
        path.display()
    )]
    Sha256Sums {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A file does not have the sha256 its folder's `SHA256SUMS` gives.
    #[error(
        "{}: sha256 {actual} differs from {expected} given by {} line {line}: the file is damaged \
         or was changed after SHA256SUMS was written; restore it (or, if the change is intended, \
         update its line in SHA256SUMS)",
        path.display(), sums.display()
    )]
    Sha256Mismatch {
        /// The file that was read.
        path: PathBuf,
        /// The `SHA256SUMS` file.
        sums: PathBuf,
        /// Its line that lists the file.
        line: usize,
        expected: String,
        actual: String,
    },

    /// A file the loader reads is not listed in its folder's `SHA256SUMS`.
    #[error(
        "{}: not listed in {} (as `{file}`), though the router is loaded from it: add its line \
         (`sha256sum {file} >> SHA256SUMS` in the folder) or remove SHA256SUMS",
        path.display(), sums.display()
    )]
    NotInSha256Sums {
        path: PathBuf,
        sums: PathBuf,
        /// The path relative to the folder, as SHA256SUMS would list it.
        file: String,
    },

    /// A folder whose `config.json` is the pinned release's holds another version of a file.
    #[error(
        "{}: sha256 {actual} differs from the R2-Router release {} ({}, pinned in r2): this \
         folder's config.json is that release's, so its checkpoints must be too; the file is \
         damaged or was replaced: restore it from the release (commit {})",
        path.display(),
        crate::integrity::release_name(),
        match expected { Some(e) => format!("`{file}` has sha256 {e}"), None => format!("which has no `{file}`") },
        crate::release::COMMIT
    )]
    ReleaseMismatch {
        path: PathBuf,
        /// The path relative to the folder, as in [`crate::release::FILES`].
        file: String,
        /// The pinned sha256 (`None` when the release has no such file).
        expected: Option<String>,
        actual: String,
    },

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

/// "it holds a, b/, c (and 3 more)" or "it is empty".
fn found_text(found: &[String], more: usize) -> String {
    if found.is_empty() {
        return "it is empty".to_owned();
    }
    let mut text = format!("it holds {}", found.join(", "));
    if more > 0 {
        text.push_str(&format!(" (and {more} more)"));
    }
    text
}

/// The first three paths, then how many more.
fn looked_text(paths: &[PathBuf]) -> String {
    let mut text: Vec<String> = paths
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > 3 {
        text.push(format!("and {} more", paths.len() - 3));
    }
    text.join(", ")
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

impl r2_core::Classify for Error {
    fn class(&self) -> r2_core::ErrorClass {
        use r2_core::ErrorClass::{Internal, InvalidInput, NotFound};
        match self {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => NotFound,
            Error::Io { .. } => Internal,
            Error::RouterNotFound { .. }
            | Error::NoRouterLayout { .. }
            | Error::NoCheckpoints { .. } => NotFound,
            Error::Core { source, .. } => source.class(),
            Error::Joblib(e) => match &e.kind {
                crate::joblib::JoblibErrorKind::Io(io)
                    if io.kind() == std::io::ErrorKind::NotFound =>
                {
                    NotFound
                }
                _ => InvalidInput,
            },
            // The content of a file the user gave is wrong.
            Error::Sha256Sums { .. }
            | Error::Sha256Mismatch { .. }
            | Error::NotInSha256Sums { .. }
            | Error::ReleaseMismatch { .. }
            | Error::Json { .. }
            | Error::InvalidConfig { .. }
            | Error::Safetensors { .. }
            | Error::Metadata { .. }
            | Error::MissingTensor { .. }
            | Error::UnexpectedTensor { .. }
            | Error::TensorDtype { .. }
            | Error::TensorShape { .. }
            | Error::NonFinite { .. }
            | Error::ModelNotInRouter { .. }
            | Error::DimensionMismatch { .. }
            | Error::Upstream { .. } => InvalidInput,
        }
    }
}
