//! Watches the config file's directory, not the file: editors replace files by rename, and a
//! Kubernetes ConfigMap swaps a `..data` symlink, and both are seen only from the directory.
//! The prompt folder, when there is one, is watched whole: any file in it may be a template.

use std::ffi::OsString;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

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
    // Events name absolute paths (the watcher makes a relative one absolute), so the folder
    // is compared as one.
    let prompt_dir =
        prompts.map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `tollgate serve --config config/tollgate.yaml` gives relative paths: a change in the
    /// prompt folder must still reload.
    #[tokio::test]
    async fn a_change_in_a_relative_prompt_folder_triggers_a_reload() {
        // Relative to the package root, where tests run.
        let root = PathBuf::from(format!("target/tollgate-watch-{}", std::process::id()));
        let prompts = root.join("prompts");
        std::fs::create_dir_all(prompts.join("greet")).unwrap();
        std::fs::write(root.join("tollgate.yaml"), "").unwrap();
        let (reloader, mut triggers) = crate::reload::channel();
        let _watcher = watch_file(&root.join("tollgate.yaml"), Some(&prompts), reloader).unwrap();
        std::fs::write(prompts.join("greet/2.yaml"), "messages: []\n").unwrap();
        let trigger =
            tokio::time::timeout(std::time::Duration::from_secs(10), triggers.recv()).await;
        std::fs::remove_dir_all(&root).unwrap();
        assert!(
            matches!(trigger, Ok(Some(Trigger::FileChanged))),
            "{trigger:?}"
        );
    }
}
