//! A throwaway PostgreSQL cluster, started from Debian's `postgresql` package
//! (or the binaries in `ENGRAM_PG_BIN`): what the cluster scenario measures
//! engram on, and what the root crate's tests run their PostgreSQL suites on
//! (`tests/common/pg.rs`).
//!
//! The cluster lives in `<root>/<pid>`, listens on a free loopback port with
//! trust authentication and durable commits (fsync on, as in production), and
//! dies with the process that started it (the postmaster is spawned with a
//! parent-death signal from a thread that never ends). As root (CI) it runs as
//! the `postgres` user, since PostgreSQL refuses to run as root.
//!
//! Without PostgreSQL's binaries it panics, saying how to install them: a
//! caller that needs PostgreSQL never skips quietly.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster: its port and data dir.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Cluster {
    /// Starts a cluster in `<root>/<this process's id>`; the dirs of clusters
    /// whose processes are gone are removed first.
    pub fn start(root: &Path) -> Cluster {
        start(root)
    }

    /// Makes database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` in `database` with psql; panics with its output on failure.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-t", "-A"])
            .args([
                "-p",
                &self.port.to_string(),
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server (fast shutdown: sessions are cut, nothing committed
    /// is lost) and waits until it is down.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn restart(&self) {
        spawn_postmaster(self);
        wait_ready(self);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let status = as_postgres(Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }
}

/// Where PostgreSQL's server binaries are: `ENGRAM_PG_BIN`, else the newest
/// of Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ENGRAM_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries were not found (no /usr/lib/postgresql/*/bin/initdb): \
             install them (`apt-get install postgresql`, as .ci/run does) or set ENGRAM_PG_BIN"
        )
    })
}

/// The uid and gid of the `postgres` user, when running as root.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as \
         (Debian's postgresql package makes it)"
    );
    // SAFETY: pw is a valid passwd record.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn as_postgres(mut cmd: Command) -> Command {
    if let Some((uid, gid)) = postgres_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_to_postgres(path: &Path) {
    if let Some((uid, gid)) = postgres_user() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown the cluster dir");
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

fn start(root: &Path) -> Cluster {
    let bin = bin_dir();
    let dir = root.join(std::process::id().to_string());
    // Clusters of test processes that are gone died with them: their dirs go.
    for old in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let pid = old.file_name().to_string_lossy().parse::<i32>().ok();
        // SAFETY: kill with signal 0 only asks whether the process exists.
        if pid.is_some_and(|p| unsafe { libc::kill(p, 0) } != 0) || old.path() == dir {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    std::fs::create_dir_all(&dir).expect("make the cluster dir");
    for d in [root, dir.as_path()] {
        // The postgres user must be able to reach and own its dir.
        let _ = std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    chown_to_postgres(&dir);
    let out = as_postgres(Command::new(bin.join("initdb")))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .arg("-D")
        .arg(dir.join("data"))
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster = Cluster {
        port: free_port(),
        dir,
        bin,
    };
    spawn_postmaster(&cluster);
    wait_ready(&cluster);
    cluster
}

/// Starts the postmaster from a thread that never ends, with SIGKILL as its
/// parent-death signal (the signal follows the thread that spawned it): it
/// goes when the test process goes.
fn spawn_postmaster(c: &Cluster) {
    let mut cmd = as_postgres(Command::new(c.bin.join("postgres")));
    cmd.arg("-D")
        .arg(c.dir.join("data"))
        .args(["-p", &c.port.to_string()])
        .arg("-k")
        .arg(&c.dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.dir.join("log")).expect("log file"));
    // SAFETY: prctl is async-signal-safe and touches only this child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let child = cmd.spawn();
            let ok = child.is_ok();
            tx.send(child.map(|_| ()).map_err(|e| e.to_string()))
                .unwrap();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        })
        .expect("spawn the postgres parent thread");
    rx.recv().unwrap().expect("start postgres");
}

fn wait_ready(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(c.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q"])
            .args(["-p", &c.port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(c.dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
