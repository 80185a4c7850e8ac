//! Writing files so that a crash or an error never leaves a half-written one behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::HfFileError;

/// Writes `bytes` to `path` through a synced temporary file renamed into place, so that a
/// reader sees the old file or the new one, never a partial one.
///
/// ```
/// let path = std::env::temp_dir().join(format!("lora-hf-atomic-doc-{}.txt", std::process::id()));
/// lora_hf::write_atomic(&path, b"new").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"new");
/// # std::fs::remove_file(&path).unwrap();
/// ```
///
/// # Errors
/// [`HfFileError::Io`] naming the file when the temporary file cannot be written or renamed;
/// the file at `path` is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HfFileError> {
    let staged = stage(path, bytes)?;
    // One rename over the old file: unlike `commit`, no moment without a file at `path`.
    std::fs::rename(&staged.temporary, path).map_err(|source| HfFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    crate::staged_dir::sync_parent(path);
    Ok(())
}

/// The contents of one file waiting to replace `path` (see [`stage`]); dropping it uncommitted
/// removes the temporary file.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("lora-hf-pending-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let staged = lora_hf::stage(&dir.join("a.json"), b"{}").unwrap();
/// drop(staged);
/// assert!(!dir.join("a.json").exists());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct PendingFile {
    temporary: PathBuf,
    path: PathBuf,
}

/// Writes `bytes` to a temporary file beside `path` and syncs it; nothing replaces `path` until
/// [`commit`] renames it into place.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("lora-hf-stage-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let files = vec![
///     lora_hf::stage(&dir.join("config.json"), b"{}").unwrap(),
///     lora_hf::stage(&dir.join("weights.bin"), b"0").unwrap(),
/// ];
/// assert!(!dir.join("config.json").exists());
/// lora_hf::commit(files).unwrap();
/// assert!(dir.join("config.json").exists() && dir.join("weights.bin").exists());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// [`HfFileError::Io`] naming the temporary file when it cannot be created or written.
pub fn stage(path: &Path, bytes: &[u8]) -> Result<PendingFile, HfFileError> {
    let io = |source| HfFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::leftovers::remove_leftovers(path, &["tmp-"]);
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(e));
    }
    Ok(PendingFile {
        temporary,
        path: path.to_path_buf(),
    })
}

/// Renames staged files into place, in order. Each rename is atomic (a reader sees the old
/// file or the new one, never a partial one), and if any rename fails, the files already
/// replaced are put back, so the directory keeps its previous contents. See [`stage`] for an
/// example.
///
/// # Errors
/// [`HfFileError::Io`] naming the file that could not be renamed into place; the files
/// already replaced are put back.
pub fn commit(files: Vec<PendingFile>) -> Result<(), HfFileError> {
    let mut backups: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for file in &files {
        let backup = file.temporary.with_extension("previous");
        let had_previous = file.path.exists();
        let result = (|| {
            // Renaming would move a directory standing at the file's place aside and leave it
            // behind as the backup; refuse it as writing the file in place would.
            if file.path.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "a directory stands where the file is to be written",
                ));
            }
            if had_previous {
                std::fs::rename(&file.path, &backup)?;
            }
            std::fs::rename(&file.temporary, &file.path)
        })();
        if let Err(source) = result {
            if had_previous && !file.path.exists() {
                let _ = std::fs::rename(&backup, &file.path);
            }
            for (path, previous) in backups.into_iter().rev() {
                match previous {
                    Some(previous) => {
                        let _ = std::fs::rename(previous, &path);
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            return Err(HfFileError::Io {
                path: file.path.clone(),
                source,
            });
        }
        backups.push((file.path.clone(), had_previous.then_some(backup)));
    }
    for (path, previous) in backups {
        if let Some(previous) = previous {
            let _ = std::fs::remove_file(previous);
        }
        crate::staged_dir::sync_parent(&path);
    }
    Ok(())
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // After a successful rename the temporary is gone and this does nothing.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_left_by_a_process_that_no_longer_runs_is_removed_by_the_next_write() {
        let dir = std::env::temp_dir().join(format!("lora-hf-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // No process has this id (above Linux's pid_max); the other belongs to this process.
        let stale = dir.join(".a.json.tmp-4294967295");
        let other_name = dir.join(".b.json.tmp-4294967295");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&other_name, b"half").unwrap();
        write_atomic(&dir.join("a.json"), b"{}").unwrap();
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists());
        }
        assert!(
            other_name.exists(),
            "only the leftovers of the file written go"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_atomic_replaces_a_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("lora-hf-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_commit_restores_the_files_already_replaced() {
        let dir = std::env::temp_dir().join(format!("lora-hf-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blocked")).unwrap();
        write_atomic(&dir.join("first"), b"old").unwrap();
        let files = vec![
            stage(&dir.join("first"), b"new").unwrap(),
            stage(&dir.join("blocked"), b"file").unwrap(),
        ];
        let err = commit(files).unwrap_err();
        assert!(matches!(&err, HfFileError::Io { path, .. } if path.ends_with("blocked")));
        assert_eq!(std::fs::read(dir.join("first")).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
