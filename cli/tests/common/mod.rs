//! Helpers shared by the CLI's integration tests (each test file uses part of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

pub type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A fresh directory under the system temp dir, removed when dropped (also on failure).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let unique =
            format!("cairn-cli-{name}-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// `rel` under this directory, as the UTF-8 text a command line takes.
    pub fn arg(&self, rel: &str) -> Result<String> {
        Ok(self.0.join(rel).to_str().ok_or("temp path is not UTF-8")?.to_string())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `cairn` with `args` in `cwd` (where an aborted run's core file, if any, would land).
pub fn cairn(cwd: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_cairn")).current_dir(cwd).args(args).output()?)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert `out` failed with exactly one `error: ` line on stderr.
pub fn assert_one_line_error(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: exited successfully");
    assert_eq!(err.lines().count(), 1, "{what}: stderr is not one line: {err:?}");
    assert!(err.starts_with("error: "), "{what}: {err:?}");
}
