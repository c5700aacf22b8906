//! Processes and their ends: running a child to its end with a deadline (for the
//! tests that drive external clients, the SDK agents and the conformance suite,
//! synchronously), killing one as a crash would, finding the process that owns
//! a data dir, and installing external tools once across test processes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Output {
    pub status_ok: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Reads a pipe to its end on a thread (so neither pipe of a child can fill and block it).
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs a command to its end, or kills it (and what it started) after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    use std::os::unix::process::CommandExt;
    // Its own process group, so a timeout also ends the helpers it started, which
    // hold its pipes open.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(match status {
        Some(s) => Output {
            status_ok: s.success(),
            status: s.to_string(),
            stdout,
            stderr,
        },
        None => Output {
            status_ok: false,
            status: format!("killed after {} s", timeout.as_secs()),
            stdout,
            stderr,
        },
    })
}

/// SIGKILL: the process dies as in a crash, with no chance to clean up.
pub fn kill9(pid: u32) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// The pid of the process that owns a data dir (written in its `engram.lock`).
pub fn owner_pid(data_dir: &Path) -> u32 {
    std::fs::read_to_string(data_dir.join("engram.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// An exclusive lock on a file (across threads and processes: parallel tests and
/// `cargo test` runs install what they need once), held until dropped.
pub struct InstallLock(#[allow(dead_code)] std::fs::File);

impl InstallLock {
    pub fn take(path: &Path) -> Result<InstallLock, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.lock()
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        Ok(InstallLock(file))
    }
}
