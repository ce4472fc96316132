//! Watches the config file's directory, not the file: editors replace files by rename, and a
//! Kubernetes ConfigMap swaps a `..data` symlink, and both are seen only from the directory.
//! The prompt folder, when there is one, is watched whole: any file in it may be a template.

use std::ffi::OsString;
use std::path::Path;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{Reloader, Trigger};

/// Starts watching `config` (and the prompt folder `prompts`); each relevant event becomes a
/// [`Trigger::FileChanged`]. The watch lasts as long as the returned watcher.
pub fn watch_file(
    config: &Path,
    prompts: Option<&Path>,
    reloader: Reloader,
) -> notify::Result<RecommendedWatcher> {
    let directory = match config.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let name: OsString = config.file_name().map(OsString::from).unwrap_or_default();
    let prompt_dir = prompts.map(Path::to_path_buf);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|path| {
            prompt_dir.as_ref().is_some_and(|dir| path.starts_with(dir))
                || path.file_name().is_some_and(|file| {
                    // `..data` and `..2026_11_28...`: a ConfigMap's atomic swap.
                    file == name || file.to_string_lossy().starts_with("..")
                })
        });
        if relevant {
            reloader.trigger(Trigger::FileChanged);
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    if let Some(prompts) = prompts {
        watcher.watch(prompts, RecursiveMode::Recursive)?;
    }
    Ok(watcher)
}
