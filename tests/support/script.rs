//! Finding the lab's scripts (`tests/lab/lab.sh`, `tests/vm/vm.sh`) from any
//! test target: the root package's, the engine's (whose manifest folder is
//! `engine/`), or a self-test compiled on its own with `rustc`.

use std::path::{Path, PathBuf};

/// The script at `rel` (from the repository root), or `$env` when set.
pub fn repo_script(env: &str, rel: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(d) = option_env!("CARGO_MANIFEST_DIR") {
        starts.push(PathBuf::from(d));
    }
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    // this file is tests/support/script.rs (absolute when included by an absolute #[path])
    let here = Path::new(file!());
    if here.is_absolute() {
        if let Some(root) = here.parent().and_then(Path::parent).and_then(Path::parent) {
            starts.push(root.to_path_buf());
        }
    }
    for start in starts {
        let mut dir: Option<&Path> = Some(&start);
        while let Some(d) = dir {
            let p = d.join(rel);
            if p.is_file() {
                return p;
            }
            dir = d.parent();
        }
    }
    PathBuf::from(rel)
}
