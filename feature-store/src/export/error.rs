//! Why an export failed, with the gRPC code each failure is reported with.

use std::path::{Path, PathBuf};

use tonic::{Code, Status};

use super::columns::ColumnType;

/// Why an export failed. Nothing is left at the destination when it does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused or failed the log read (an unknown feature is NOT_FOUND).
    #[error("{}", .0.message())]
    Status(#[from] Status),
    /// The export asks for something that cannot be exported: no features, a
    /// backwards range.
    #[error("{0}")]
    Invalid(String),
    /// The labels file does not exist.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A row or column of the labels file that cannot be read.
    #[error("{path}{}{}: {message}",
        .row.map(|r| format!(" row {r}")).unwrap_or_default(),
        .column.as_ref().map(|c| format!(", column `{c}`")).unwrap_or_default())]
    Labels {
        path: PathBuf,
        row: Option<u64>,
        column: Option<String>,
        message: String,
    },
    /// A feature whose values do not all have one type (versions that differ).
    #[error(
        "`{feature}` has values of two types, {column} and {found}: export one version \
         (`{feature}@VERSION`) at a time"
    )]
    MixedTypes {
        feature: String,
        column: ColumnType,
        found: String,
    },
    /// The destination cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path} as Parquet: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("internal error: {0}; please report it")]
    Internal(String),
}

impl Error {
    pub(super) fn read(path: &Path, source: std::io::Error) -> Error {
        Error::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(super) fn labels(
        path: &Path,
        row: Option<u64>,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Error {
        Error::Labels {
            path: path.to_path_buf(),
            row,
            column: column.map(str::to_string),
            message: message.into(),
        }
    }

    pub(super) fn write(path: &Path, source: std::io::Error) -> Error {
        Error::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(super) fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The gRPC code this failure is reported with: the server's own, or the class of
    /// a local failure (INVALID_ARGUMENT for what the caller must change).
    pub fn code(&self) -> Code {
        match self {
            Error::Status(s) => s.code(),
            Error::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NotFound
            }
            Error::Invalid(_) | Error::Read { .. } | Error::Labels { .. } => Code::InvalidArgument,
            Error::MixedTypes { .. } => Code::FailedPrecondition,
            Error::Write { .. } | Error::Parquet { .. } | Error::Internal(_) => Code::Internal,
        }
    }
}
