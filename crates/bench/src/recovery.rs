//! `bursar bench recovery`: a server process is loaded with transfers,
//! killed with SIGKILL, and restarted; the figure is the time from the
//! restart until it answers a ping (ready to serve), after which every
//! acknowledged transfer is checked to be there.

use super::LoadArgs;
use super::load;
use anyhow::{Context, bail};
use bursar_client::{Client, ClientOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct RecoveryArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Give up waiting for the restarted server after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

pub fn run(args: RecoveryArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("bursar-recovery-").tempdir()?;
    let dir = args.load.data_dir.clone().unwrap_or_else(|| temp.path().join("data"));
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let timeout = Duration::from_secs(args.timeout_seconds);

    // A fresh data directory takes this as its first admin key.
    let admin = bursar_server::keys::generate_token();
    let mut server = spawn_server(&dir, &addr, &admin, &temp.path().join("server-1.log"))?;
    wait_ready(&addr, &mut server, timeout)?;
    let mut p = args.load.params();
    p.key = Some(args.load.key.clone().unwrap_or(admin.clone()));
    load::setup(&addr, &p)?;
    let outcome = load::run(&addr, &p, true)?;
    eprintln!(
        "recovery: loaded {} transfers in {:.1} s; killing the server with SIGKILL",
        outcome.tally.applied, outcome.seconds
    );
    server.kill().context("killing the server")?;
    server.wait()?;

    let restarted = Instant::now();
    let mut server = spawn_server(&dir, &addr, &admin, &temp.path().join("server-2.log"))?;
    wait_ready(&addr, &mut server, timeout)?;
    let ready = restarted.elapsed();
    let check = load::check_balances(&addr, &p, &outcome.tally);
    stop(&mut server);
    check?;
    println!("recovery: transfers={} ready_seconds={:.2}", outcome.tally.applied, ready.as_secs_f64());
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn spawn_server(dir: &Path, addr: &str, admin_key: &str, log: &Path) -> anyhow::Result<Child> {
    let exe: PathBuf = bursar_chaos::procs::bursar_binary().map_err(anyhow::Error::msg)?;
    let log = std::fs::File::create(log)?;
    Command::new(exe)
        .args(["start", "--data-dir"])
        .arg(dir)
        .args(["--addr", addr])
        .env("BURSAR_ADMIN_KEY", admin_key)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the server process")
}

pub fn wait_ready(addr: &str, server: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let options = ClientOptions { timeout: Duration::from_secs(5), ..Default::default() };
    loop {
        if let Some(status) = server.try_wait()? {
            bail!("the server exited with {status} before it was ready");
        }
        if Client::connect(addr, &options).and_then(|mut c| c.ping()).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server was not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop(server: &mut Child) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe {
        libc::kill(server.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = server.wait();
}
