//! One host per store: an exclusive lock beside the store, whatever the spelling of its
//! path.

use std::path::{Path, PathBuf};

use crate::StoreError;

/// The one host of a store: an exclusive lock on `PATH.lock` beside the store, held for
/// as long as the value lives and released by the operating system if the process dies.
/// Two hosts on one store would each overwrite the other's contacts (a STOP one of them
/// recorded could be lost), so a second one is refused at once, with the holder's pid.
/// Commands that change a store outside a host (`forget`, `purge`) take it too.
#[derive(Debug)]
pub struct HostLock {
    _file: std::fs::File,
    pub(crate) store: PathBuf,
}

impl HostLock {
    /// Takes the lock of the store at `store`, or says which process holds it.
    pub fn acquire(store: &Path) -> Result<HostLock, StoreError> {
        use std::io::{Read, Seek, Write};
        let mut name = resolved(store).into_os_string();
        name.push(".lock");
        let path = PathBuf::from(name);
        let lock_error = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder writes its pid right after locking; it may not be there yet.
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::InUse {
                    path: store.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_error(e)),
        }
        file.set_len(0).map_err(lock_error)?;
        file.rewind().map_err(lock_error)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
        Ok(HostLock {
            _file: file,
            store: store.to_path_buf(),
        })
    }
}

/// The store's path with symbolic links and `.`/`..` resolved, so every spelling of one
/// store (`x.db`, `./x.db`, its absolute path, a link to it) has one lock. A store not
/// made yet resolves through its folder.
fn resolved(store: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(store) {
        return p;
    }
    let dir = match store.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), store.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => store.to_path_buf(),
    }
}
