//! A throwaway PostgreSQL cluster in a temporary directory, on a free
//! loopback port: for the tests and `bursar bench project-postgres`.
//!
//! initdb refuses to run as root, so when this process is root every
//! PostgreSQL command runs as the `postgres` system user (via `runuser`) and
//! the directory is handed to that user.

use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `Some("postgres")` when commands must run as another user.
    run_as: Option<&'static str>,
}

impl TempPostgres {
    /// initdb and start; fails with a clear message when PostgreSQL is not
    /// installed.
    pub fn start() -> Result<TempPostgres, HarnessError> {
        let pg = TempPostgres::init()?;
        pg.start_server()?;
        Ok(pg)
    }

    /// Like [`TempPostgres::start`], with `ssl = on` serving `cert_pem`
    /// (a chain) and `key_pem`, and TCP clients accepted over TLS only
    /// (`hostssl` in pg_hba.conf).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<TempPostgres, HarnessError> {
        let pg = TempPostgres::init()?;
        pg.write_data_file("server.crt", cert_pem)?;
        pg.write_data_file("server.key", key_pem)?;
        pg.write_data_file("pg_hba.conf", "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")?;
        let conf = pg.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(HarnessError::io("reading", &conf))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        pg.write_data_file("postgresql.conf", &text)?;
        pg.start_server()?;
        Ok(pg)
    }

    /// A file in the data directory, owned by the server's user, private
    /// (PostgreSQL refuses a key readable by others).
    fn write_data_file(&self, name: &str, text: &str) -> Result<(), HarnessError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data().join(name);
        std::fs::write(&path, text).map_err(HarnessError::io("writing", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(HarnessError::io("making private", &path))?;
        if let Some(user) = self.run_as {
            let ok = Command::new("chown").arg(format!("{user}:{user}")).arg(&path).status().is_ok_and(|s| s.success());
            if !ok {
                return Err(HarnessError::Chown { path, user });
            }
        }
        Ok(())
    }

    /// initdb in a fresh temp dir, without starting the server.
    fn init() -> Result<TempPostgres, HarnessError> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new().prefix("bursar-pg-").tempdir().map_err(HarnessError::TempDir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then_some("postgres");
        if root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map_err(|source| HarnessError::Spawn { program: "chown".to_string(), source })?
                .success();
            if !ok {
                return Err(HarnessError::NoPostgresUser);
            }
        }
        let pg = TempPostgres { dir, bin, port: crate::nats_server::free_port()?, run_as };
        pg.command("initdb")
            .args(["-D"])
            .arg(pg.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .run()?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A connection string for the `postgres` database as superuser.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=5", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) on the same port and waits until it accepts.
    pub fn start_server(&self) -> Result<(), HarnessError> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_wal_size=4GB -c shared_buffers=256MB",
            self.port,
            self.dir.path().display()
        );
        self.command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("postgres.log"))
            .args(["-o", &options, "start"])
            .run()?;
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                let (name, port, log) = ("PostgreSQL".to_string(), self.port, self.log_tail());
                return Err(HarnessError::NotListening { name, port, waited: LISTEN_TIMEOUT, log });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Like a crash: `pg_ctl stop -m immediate` (no checkpoint; recovery
    /// replays the WAL on the next start).
    pub fn stop_immediate(&self) -> Result<(), HarnessError> {
        self.command("pg_ctl").args(["-w", "-D"]).arg(self.data()).args(["-m", "immediate", "stop"]).run()
    }

    /// The end of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn command(&self, program: &str) -> Cmd {
        let path = self.bin.join(program);
        let mut c = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        c.stdin(Stdio::null()).current_dir(self.dir.path());
        Cmd(c, program.to_string())
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
    }
}

struct Cmd(Command, String);

impl Cmd {
    fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Cmd {
        self.0.args(a);
        self
    }
    fn arg<S: AsRef<std::ffi::OsStr>>(mut self, a: S) -> Cmd {
        self.0.arg(a);
        self
    }
    fn run(mut self) -> Result<(), HarnessError> {
        let out = self.0.output().map_err(|source| HarnessError::Spawn { program: self.1.clone(), source })?;
        if !out.status.success() {
            let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            return Err(HarnessError::Failed { program: self.1, status: out.status, output });
        }
        Ok(())
    }
}

/// `BURSAR_PG_BIN`, else the newest `/usr/lib/postgresql/<v>/bin` (Debian),
/// else the directory of `pg_ctl` on the PATH.
fn find_bin() -> Result<PathBuf, HarnessError> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("BURSAR_PG_BIN") {
        let d = PathBuf::from(d);
        return if has(&d) {
            Ok(d)
        } else {
            Err(HarnessError::BadBinDir { var: "BURSAR_PG_BIN", dir: d, missing: "initdb and pg_ctl" })
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has(&dir) {
            return Ok(dir);
        }
    }
    Err(HarnessError::NotInstalled {
        program: "PostgreSQL server binaries (initdb, pg_ctl)",
        searched: "in $BURSAR_PG_BIN, /usr/lib/postgresql/<version>/bin or on PATH",
        install: "install PostgreSQL (Debian: apt-get install postgresql) or set BURSAR_PG_BIN to their directory",
    })
}

/// Longest wait for a started server to accept connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
