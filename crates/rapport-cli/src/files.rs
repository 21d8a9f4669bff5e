//! Reading project files safely: only regular files inside the project folder, at most
//! `MAX_FILE_BYTES` each. A project folder can hold anything (a link to a secret, a pipe
//! that never ends, a link to `/dev/zero`), and `rapport check` runs in CI on pull requests.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest project file read (`rapport.yaml`, `.flow`, `.test.yaml`): 4 MiB.
pub(crate) const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A symbolic link whose target is outside the project folder.
    OutsideProject(PathBuf),
    /// A FIFO, socket, device or folder where a file was expected.
    NotRegular(&'static str),
    /// Larger than `MAX_FILE_BYTES`.
    TooLarge,
    NotUtf8,
    Io(std::io::Error),
}

impl Refused {
    /// Whether the file is one a user could not have meant as a project file (a link
    /// leading out of the project, a pipe, a device): skipped with a warning when found
    /// by searching a folder. A file too large or unreadable is a real file the user
    /// expects to be checked, so it stays an error.
    pub(crate) fn is_skippable(&self) -> bool {
        matches!(self, Refused::OutsideProject(_) | Refused::NotRegular(_))
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::OutsideProject(target) => write!(
                f,
                "it is a symbolic link to `{}`, outside the project folder\n  help: rapport reads only files inside the project folder; copy the file into the project instead of linking to it",
                target.display()
            ),
            Refused::NotRegular(kind) => write!(
                f,
                "it is {kind}, not a regular file\n  help: rapport reads only regular files; remove it or rename it so it does not end in .flow or .yaml"
            ),
            Refused::TooLarge => write!(
                f,
                "it is larger than {} MiB\n  help: project files are limited to {} MiB each; split the file",
                MAX_FILE_BYTES / (1024 * 1024),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
            Refused::NotUtf8 => write!(
                f,
                "it is not UTF-8 text\n  help: save the file as UTF-8"
            ),
            Refused::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads `path`, which must be a regular file inside `root` (a symbolic link is followed
/// only when its target is inside `root` too), at most `MAX_FILE_BYTES` long, UTF-8.
pub(crate) fn read_project_file(path: &Path, root: &Path) -> Result<String, Refused> {
    let own = std::fs::symlink_metadata(path).map_err(Refused::Io)?;
    if own.file_type().is_symlink() {
        let target = path.canonicalize().map_err(Refused::Io)?;
        let root = root.canonicalize().map_err(Refused::Io)?;
        if !target.starts_with(&root) {
            return Err(Refused::OutsideProject(target));
        }
    }
    // The kind is looked at before opening: opening a FIFO for reading blocks until a
    // writer comes.
    let meta = std::fs::metadata(path).map_err(Refused::Io)?;
    if !meta.is_file() {
        return Err(Refused::NotRegular(kind(&meta)));
    }
    let file = File::open(path).map_err(Refused::Io)?;
    // The file opened may not be the one looked at (it can be swapped in between): look
    // again at what is open.
    let meta = file.metadata().map_err(Refused::Io)?;
    if !meta.is_file() {
        return Err(Refused::NotRegular(kind(&meta)));
    }
    // The size in the metadata is not trusted (files under /proc report 0): read one
    // byte more than allowed to know whether there was more.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Refused::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Refused::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| Refused::NotUtf8)
}

/// What a file that is not a regular file is, in words.
pub(crate) fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Whether a folder entry is a symbolic link (folders reached through links are not
/// searched: a link can lead out of the project or round in a loop).
pub(crate) fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Reports a file that was not read on stderr: `error:` (the caller exits with 2) or,
/// for a file found by searching a folder that could not have been meant, `warning:`
/// (the file is skipped). Returns whether it was an error.
pub(crate) fn report_refused(path: &Path, why: &Refused, named: bool) -> bool {
    let error = named || !why.is_skippable();
    let (level, what) = if error {
        ("error", "cannot read")
    } else {
        ("warning", "skipped")
    };
    eprintln!("{level}: {what} `{}`: {why}", path.display());
    error
}
