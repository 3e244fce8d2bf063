//! A throwaway PostgreSQL cluster in a temporary directory, on a free
//! loopback port: for the tests and `bursar bench project-postgres`.
//!
//! initdb refuses to run as root, so when this process is root every
//! PostgreSQL command runs as the `postgres` system user (via `runuser`) and
//! the directory is handed to that user.

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
    pub fn start() -> Result<TempPostgres, String> {
        let pg = TempPostgres::init()?;
        pg.start_server()?;
        Ok(pg)
    }

    /// Like [`TempPostgres::start`], with `ssl = on` serving `cert_pem`
    /// (a chain) and `key_pem`, and TCP clients accepted over TLS only
    /// (`hostssl` in pg_hba.conf).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<TempPostgres, String> {
        let pg = TempPostgres::init()?;
        pg.write_data_file("server.crt", cert_pem)?;
        pg.write_data_file("server.key", key_pem)?;
        pg.write_data_file("pg_hba.conf", "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")?;
        let conf = pg.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        pg.write_data_file("postgresql.conf", &text)?;
        pg.start_server()?;
        Ok(pg)
    }

    /// A file in the data directory, owned by the server's user, private
    /// (PostgreSQL refuses a key readable by others).
    fn write_data_file(&self, name: &str, text: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data().join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(user) = self.run_as {
            let ok = Command::new("chown").arg(format!("{user}:{user}")).arg(&path).status().is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("cannot give {} to {user}", path.display()));
            }
        }
        Ok(())
    }

    /// initdb in a fresh temp dir, without starting the server.
    fn init() -> Result<TempPostgres, String> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new().prefix("bursar-pg-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then_some("postgres");
        if root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?
                .success();
            if !ok {
                return Err("running as root, but the temp dir cannot be given to the `postgres` user \
                            (initdb refuses root; create that user)"
                    .into());
            }
        }
        let pg = TempPostgres { dir, bin, port: free_port()?, run_as };
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
    pub fn start_server(&self) -> Result<(), String> {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("PostgreSQL does not accept connections: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Like a crash: `pg_ctl stop -m immediate` (no checkpoint; recovery
    /// replays the WAL on the next start).
    pub fn stop_immediate(&self) -> Result<(), String> {
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
    fn run(mut self) -> Result<(), String> {
        let out = self.0.output().map_err(|e| format!("running {}: {e}", self.1))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}{}",
                self.1,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

/// `BURSAR_PG_BIN`, else the newest `/usr/lib/postgresql/<v>/bin` (Debian),
/// else the directory of `pg_ctl` on the PATH.
fn find_bin() -> Result<PathBuf, String> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(d) = std::env::var("BURSAR_PG_BIN") {
        let d = PathBuf::from(d);
        return if has(&d) { Ok(d) } else { Err(format!("BURSAR_PG_BIN={} has no initdb and pg_ctl", d.display())) };
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
    Err("PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL \
         (Debian: apt-get install postgresql) or set BURSAR_PG_BIN to their directory"
        .into())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| format!("finding a free port: {e}"))?.port())
}
