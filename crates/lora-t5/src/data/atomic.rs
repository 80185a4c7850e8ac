//! Replacing a file atomically: write a temporary file beside it, sync, rename.

use std::io::Write;
use std::path::Path;

use crate::T5Error;

/// Writes `bytes` to `path` through a synced temporary file renamed into place, so that a
/// reader sees the old file or the new one, never a partial one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), T5Error> {
    let io = |source| T5Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(e));
    }
    Ok(())
}
