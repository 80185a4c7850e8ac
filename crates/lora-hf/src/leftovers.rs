//! What interrupted writes leave behind: hidden siblings named after the file or directory
//! being written and the process writing it (`.<name>.<kind>-<pid>`), removed by the next write
//! of the same target once that process no longer runs.

use std::path::Path;

/// Whether the process `pid` has ended, where `/proc` tells (elsewhere: assumed running, so
/// nothing of another process is removed).
fn process_is_gone(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the `.<name>.<kind>-<pid>` siblings of `target` (files or directories), for each of
/// `kinds`, whose process is not this one and no longer runs.
pub(crate) fn remove_leftovers(target: &Path, kinds: &[&str]) {
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file.strip_prefix(&prefix).and_then(|rest| {
            kinds
                .iter()
                .find_map(|kind| rest.strip_prefix(kind))
                .and_then(|pid| pid.parse::<u32>().ok())
        });
        if pid.is_some_and(|pid| pid != std::process::id() && process_is_gone(pid)) {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}
