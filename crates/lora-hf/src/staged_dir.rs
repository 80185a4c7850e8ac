//! A directory written in full beside its final place and swapped in at once, so that a crash
//! or an error never leaves a directory mixing old and new files.

use std::path::{Path, PathBuf};

use crate::HfFileError;

/// A directory being written: files go into a hidden sibling of `target`
/// (`.<name>.partial-<pid>`), and [`commit`](Self::commit) replaces `target` with it. Dropped
/// uncommitted, it removes what was written and `target` is untouched.
///
/// The swap is two renames (the old directory aside, the new one into place) and a sync of the
/// parent: a crash between them leaves `target` absent and the old directory beside it as
/// `.<name>.previous-<pid>`, never a mixture. Leftovers of interrupted writes of the same
/// `target` by processes that no longer run are removed when the next one starts.
///
/// ```
/// let root = std::env::temp_dir().join(format!("lora-hf-staged-doc-{}", std::process::id()));
/// let target = root.join("merged");
/// std::fs::create_dir_all(&target).unwrap();
/// std::fs::write(target.join("stale.bin"), b"old").unwrap();
/// let staged = lora_hf::StagedDir::new(&target).unwrap();
/// std::fs::write(staged.path().join("config.json"), b"{}").unwrap();
/// assert!(!target.join("config.json").exists());
/// staged.commit().unwrap();
/// assert!(target.join("config.json").exists() && !target.join("stale.bin").exists());
/// # std::fs::remove_dir_all(&root).unwrap();
/// ```
#[derive(Debug)]
pub struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Creates the staging directory for `target` (its parent is created too).
    ///
    /// # Errors
    /// [`HfFileError::Io`] naming the directory when it cannot be created, or when `target`
    /// has no file name.
    pub fn new(target: &Path) -> Result<Self, HfFileError> {
        let io = |path: &Path, source| HfFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let name = target.file_name().ok_or_else(|| {
            io(
                target,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no directory name"),
            )
        })?;
        let name = name.to_string_lossy().into_owned();
        let sibling =
            |kind: &str| target.with_file_name(format!(".{name}.{kind}-{}", std::process::id()));
        crate::leftovers::remove_leftovers(target, &["partial-", "previous-"]);
        let staging = sibling("partial");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the directory's files.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Syncs the staged files and puts the directory at `target`, replacing (and deleting)
    /// what was there.
    ///
    /// # Errors
    /// [`HfFileError::Io`] naming the path that could not be synced or renamed; `target` then
    /// keeps its previous contents.
    pub fn commit(mut self) -> Result<(), HfFileError> {
        let io = |path: &Path, source| HfFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let entries = std::fs::read_dir(&self.staging).map_err(|e| io(&self.staging, e))?;
        for entry in entries.flatten() {
            if entry.path().is_file() {
                std::fs::File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io(&entry.path(), e))?;
            }
        }
        let previous = self.staging.with_file_name(
            self.staging
                .file_name()
                .map(|n| n.to_string_lossy().replace(".partial-", ".previous-"))
                .unwrap_or_default(),
        );
        let had_previous = self.target.exists();
        if had_previous {
            std::fs::rename(&self.target, &previous).map_err(|e| io(&self.target, e))?;
        }
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            if had_previous {
                let _ = std::fs::rename(&previous, &self.target);
            }
            return Err(io(&self.target, e));
        }
        self.committed = true;
        sync_parent(&self.target);
        if had_previous {
            std::fs::remove_dir_all(&previous).map_err(|e| io(&previous, e))?;
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Syncs the directory holding `path`, so that a rename into it survives a crash (where the
/// platform can open a directory; elsewhere nothing is done).
pub(crate) fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lora-hf-staged-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_uncommitted_directory_leaves_the_target_untouched_and_nothing_behind() {
        let root = scratch("drop");
        let target = root.join("out");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("a"), b"old").unwrap();
        let staged = StagedDir::new(&target).unwrap();
        std::fs::write(staged.path().join("a"), b"new").unwrap();
        drop(staged);
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn leftovers_of_a_process_that_no_longer_runs_are_removed() {
        let root = scratch("stale");
        let target = root.join("out");
        // No process has this id (above Linux's pid_max).
        let stale = root.join(".out.partial-4294967295");
        std::fs::create_dir_all(&stale).unwrap();
        let staged = StagedDir::new(&target).unwrap();
        assert!(!stale.exists() || !Path::new("/proc/self").exists());
        staged.commit().unwrap();
        assert!(target.is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
