//! The error type of the data crate: every failure names the file, what is wrong with it, and the
//! fix, on one line.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while loading or preparing data.
///
/// Each variant carries the offending path (where there is one) and the details; its `Display`
/// is a single line of the form `<path>: <what is wrong>; <how to fix it>`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder that should exist does not.
    #[error("{path}: not found; {hint}", path = .path.display())]
    NotFound {
        /// The path that was looked for.
        path: PathBuf,
        /// Where the data usually comes from, or what else was tried.
        hint: String,
    },
    /// The operating system refused to read (or write) a file.
    #[error("{path}: cannot {action}: {source}; check the path and its permissions", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// `read`, `write`, `list` ...
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with the expected magic number / header.
    #[error("{path}: bad magic number {found}, expected {expected}; the file is not {format} (wrong file, or an HTML error page saved by a failed download): replace it", path = .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What the header contains, formatted.
        found: String,
        /// What a valid header looks like.
        expected: String,
        /// The expected format, e.g. `an IDX file`.
        format: &'static str,
    },
    /// The file ends before all the data its header promises.
    #[error("{path}: truncated: {details}; the file is incomplete (interrupted download or copy): fetch it again", path = .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Expected versus found sizes.
        details: String,
    },
    /// The images and labels files of one split disagree on the number of samples.
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels; the two files belong to different datasets or splits: use matching files", images = .images.display(), labels = .labels.display())]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// Number of images.
        n_images: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// A folder holds nothing usable.
    #[error("{path}: empty: {details}", path = .path.display())]
    Empty {
        /// The folder (or file).
        path: PathBuf,
        /// What was looked for and the fix.
        details: String,
    },
    /// An image (or compressed stream) that cannot be decoded.
    #[error("{path}: cannot decode: {details}", path = .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message and the fix.
        details: String,
    },
    /// A text file that is not valid UTF-8.
    #[error("{path}: not valid UTF-8 at byte {offset} (line {line}); convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or use byte-level tokens", path = .path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid sequence.
        offset: usize,
        /// 1-based line number of that byte.
        line: usize,
    },
    /// The file is readable but its content is not what the format requires.
    #[error("{path}: {details}", path = .path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and the fix.
        details: String,
    },
    /// A configuration or argument that cannot work (no file involved).
    #[error("invalid {what}: {details}")]
    Invalid {
        /// The parameter.
        what: &'static str,
        /// What is wrong and the fix.
        details: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// An [`DataError::Io`] error, or [`DataError::NotFound`] when the error is "not found".
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path,
                hint: "check the path (it may be mistyped or the data not installed)".into(),
            }
        } else {
            DataError::Io {
                path,
                action,
                source,
            }
        }
    }

    /// A [`DataError::Format`] error.
    pub fn format(path: impl AsRef<Path>, details: impl Into<String>) -> Self {
        DataError::Format {
            path: path.as_ref().to_path_buf(),
            details: details.into(),
        }
    }

    /// A [`DataError::Invalid`] error.
    pub fn invalid(what: &'static str, details: impl Into<String>) -> Self {
        DataError::Invalid {
            what,
            details: details.into(),
        }
    }
}

/// Reads a whole file, mapping failures to [`DataError`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, "read", e))
}

/// Lists a folder's entries sorted by name, mapping failures to [`DataError`].
pub(crate) fn list_dir(path: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(path).map_err(|e| DataError::io(path, "list", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(path, "list", e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}
