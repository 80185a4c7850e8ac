//! Writing files so that a crash or an error never leaves a half-written one behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::PeftIoError;

/// The contents of one file waiting to replace `path`.
pub(crate) struct PendingFile {
    temporary: PathBuf,
    path: PathBuf,
}

/// Writes `bytes` to a temporary file beside `path` and syncs it; nothing replaces `path` until
/// [`commit`] renames it into place.
pub(crate) fn stage(path: &Path, bytes: &[u8]) -> Result<PendingFile, PeftIoError> {
    let io = |source| PeftIoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
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
/// replaced are put back, so the directory keeps its previous contents.
pub(crate) fn commit(files: Vec<PendingFile>) -> Result<(), PeftIoError> {
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
            return Err(PeftIoError::Io {
                path: file.path.clone(),
                source,
            });
        }
        backups.push((file.path.clone(), had_previous.then_some(backup)));
    }
    for (_, previous) in backups {
        if let Some(previous) = previous {
            let _ = std::fs::remove_file(previous);
        }
    }
    Ok(())
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // After a successful rename the temporary is gone and this does nothing.
        let _ = std::fs::remove_file(&self.temporary);
    }
}
