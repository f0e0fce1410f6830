//! Library errors. Every variant that comes from user input names the file
//! (or reference) and the field, so a failed gate run says what to fix.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a valid GGUF file: {msg}", path.display())]
    Gguf { path: PathBuf, msg: String },

    #[error("{}: not a valid safetensors file: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },

    #[error("{}: field `{field}`: {msg}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },

    #[error("{}: tensor `{name}`: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },

    #[error("{}: unsupported architecture `{arch}` (supported: {supported})", path.display())]
    UnsupportedArch {
        path: PathBuf,
        arch: String,
        supported: String,
    },

    #[error("model reference `{reference}`: {msg}")]
    ModelRef { reference: String, msg: String },

    #[error("{}:{line}: {msg}", path.display())]
    Input {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    #[error("{0}")]
    Usage(String),

    #[error("{}: job store: {msg}", path.display())]
    Store { path: PathBuf, msg: String },

    /// The shared PostgreSQL queue; `url` is shown without its password.
    #[error("job queue {url}: {msg}")]
    Queue { url: String, msg: String },

    /// A call to a registry or GitHub failed; `what` names the call.
    #[error("{what}: {msg}")]
    Remote { what: String, msg: String },

    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),

    #[error("tensor computation failed: {0}")]
    Candle(String),

    /// Every mistake found in one file (a policy), one to a line, in the
    /// order of the checks.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<Error>),
}

/// candle attaches a backtrace to errors when RUST_BACKTRACE is set; users
/// need the message, not the trace.
pub fn candle_msg(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_msg(inner),
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", candle_msg(inner))
        }
        other => other.to_string(),
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(candle_msg(&e))
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A mistake at a line of a text file (1-based; 0 when no line is to blame).
    pub fn input(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }

    pub fn field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Field {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    pub fn tensor(
        path: impl Into<PathBuf>,
        name: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            name: name.into(),
            msg: msg.into(),
        }
    }
}
