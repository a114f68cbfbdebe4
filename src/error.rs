//! The crate's error type. Every variant says where the problem is (a file and line, a JSON path, a
//! kernel name) and what was expected. The CLI prints `sslf: error: {err}` and maps the variant to an
//! exit code with [`Error::exit_code`].

use std::path::PathBuf;

/// Errors raised by sslf. Messages are lowercase and carry no trailing period.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or override is invalid. `path` is the JSON path (`solver.cg_iters`).
    #[error("{file}: {path}: {message}")]
    Config {
        file: String,
        path: String,
        message: String,
    },
    /// A data file is malformed. `line` is 1-based; 0 means the file as a whole.
    #[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Data {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// A model file is malformed or does not match what was asked.
    #[error("{}: {message}", file.display())]
    Model { file: PathBuf, message: String },
    /// A device could not be found, created or used.
    #[error("device: {0}")]
    Device(String),
    /// The data or model does not fit the device.
    #[error("device memory: {what} needs {needed} bytes, but {available}")]
    DeviceMemory {
        what: String,
        needed: u64,
        /// What the device offers, in words with the figure (a limit, or what was in use).
        available: String,
    },
    /// A WGSL module or pipeline failed to compile or validate.
    #[error("shader {kernel} ({file}): {message}")]
    Shader {
        kernel: String,
        file: String,
        message: String,
    },
    /// The user's inputs, taken together, cannot be used (for example a config whose initial
    /// point is not finite); the message says which settings to change.
    #[error("{0}")]
    Input(String),
    /// A request the current configuration cannot serve (for example an op on a model kind).
    #[error("{0}")]
    Unsupported(String),
    /// The user stopped the run (Ctrl-C); what was finished has been written.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Exit code for the CLI: 2 for bad input (config, data, model files, inputs that are
    /// missing or unreadable), 3 for device problems, 130 for an interruption, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. } | Error::Data { .. } | Error::Model { .. } | Error::Input(_) => 2,
            Error::Device(_) | Error::DeviceMemory { .. } | Error::Shader { .. } => 3,
            // A file that is not there or not readable is about the user's inputs.
            Error::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                2
            }
            Error::Unsupported(_) | Error::Io { .. } => 1,
            Error::Interrupted(_) => 130,
        }
    }

    /// Shorthand for a data error at a file and line.
    pub fn data(file: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Data {
            file: file.into(),
            line,
            message: message.into(),
        }
    }

    /// Shorthand for an I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
