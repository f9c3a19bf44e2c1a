//! Atomic creation of a file that must exist whole or not at all (a
//! terminal store, a server ledger): made beside its path under a
//! temporary name, initialised and synced there, renamed into place, and
//! the directory synced. A process killed at any instant leaves no file at
//! the path, or a complete one; what it leaves under the temporary name is
//! removed by the next creation.

use std::path::{Path, PathBuf};

/// The temporary name a creation of `path` works under
/// (`till.pdc` → `till.pdc.creating`).
pub fn creating_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    path.with_file_name(name)
}

/// Creates `path` atomically unless it already exists with content: runs
/// `init` on the temporary path (it must leave a complete, durable file
/// and close it), syncs the file, renames it over `path` and syncs the
/// directory. Returns whether it created the file. An empty file at `path`
/// (a crash of a version that created in place) counts as absent.
pub fn create_atomically<E: From<std::io::Error>>(
    path: &Path,
    init: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<bool, E> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(false);
    }
    let tmp = creating_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = init(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(true)
}

/// Makes a rename in `path`'s directory durable.
#[cfg(unix)]
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened to sync it; the rename is as
/// durable as the platform makes it.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_cleans_a_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pdc");
        std::fs::write(creating_path(&path), b"half").unwrap();
        let made = create_atomically::<std::io::Error>(&path, |tmp| std::fs::write(tmp, b"whole"));
        assert!(made.unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert!(!creating_path(&path).exists());
        // Exists: init is not run again.
        let again = create_atomically::<std::io::Error>(&path, |_| panic!("not again"));
        assert!(!again.unwrap());
        // A failing init leaves nothing.
        let other = dir.path().join("y.pdc");
        let failed = create_atomically::<std::io::Error>(&other, |tmp| {
            std::fs::write(tmp, b"part")?;
            Err(std::io::Error::other("disk"))
        });
        assert!(failed.is_err());
        assert!(!other.exists() && !creating_path(&other).exists());
    }
}
