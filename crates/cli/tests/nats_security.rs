//! `bursar start` on a secured NATS server configured exactly as the
//! example in docs/cluster.md ("Securing NATS"; read from the file, only
//! the certificate paths replaced, with a private CA generated here): a
//! cluster replica commits as the `replica` user over TLS, the relay
//! publishes the events as the `relay` user, whom the server keeps off the
//! log, and the `reader` user consumes them. A wrong password or a missing
//! CA file stops `bursar start` at once with a message naming the cause
//! and not the secret. Needs `nats-server` (fails, never skips, without).

#[path = "../../http/tests/common/mod.rs"]
mod common;
mod process_common;

use bursar_nats::{NatsEndpoint, NatsSecurity};
use bursar_outbound::nats::read_stream_from;
use bursar_testkit::nats_cluster::NatsCluster;
use bursar_testkit::pki::TestPki;
use common::{ADMIN_KEY, Client};
use process_common::{Proc, bursar, free_port, start_replica_until_ready};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The server configuration block of docs/cluster.md, using `pki`'s files.
fn documented_config(pki: &TestPki) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cluster.md")).unwrap();
    let after = doc.split("<!-- nats-accounts-example -->").nth(1).expect("the marked example in docs/cluster.md");
    let block = after.split("```").nth(1).expect("a fenced block after the marker");
    let block = block.strip_prefix("text").expect("a ```text block");
    let path = |p: &Path| p.to_str().expect("a UTF-8 temp path").to_string();
    block
        .replace("/etc/nats/tls/server.pem", &path(&pki.server_cert))
        .replace("/etc/nats/tls/server-key.pem", &path(&pki.server_key))
        .replace("/etc/nats/tls/ca.pem", &path(&pki.ca))
}

/// `bursar start` as a cluster replica of a one-server cluster, with `extra` options.
fn replica(dir: &Path, http: &str, cluster_url: &str, extra: &[&str]) -> Command {
    let mut c = bursar();
    c.args(["start", "--no-orders", "--data-dir"])
        .arg(dir)
        .args(["--addr", &format!("127.0.0.1:{}", free_port()), "--http", http])
        .args(["--cluster", cluster_url, "--node-id", "1", "--cluster-replicas", "1"])
        .args(extra)
        .env("BURSAR_ADMIN_KEY", ADMIN_KEY)
        .env("BURSAR_CLUSTER_KEY", "5e".repeat(32))
        .env("BURSAR_LOG", "info");
    c
}

/// Runs a `bursar start` that must fail; returns its output.
fn fails(mut command: Command) -> String {
    let started = Instant::now();
    let out = command.output().expect("the bursar binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "should have failed: {text}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused, not timed out: {text}");
    text
}

#[test]
fn replica_and_relay_work_on_the_documented_secured_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(tmp.path(), "main").unwrap();
    let nats = NatsCluster::start_with(&tmp.path().join("nats"), 1, &documented_config(&pki))
        .unwrap_or_else(|e| panic!("this test needs a real nats-server: {e}"));
    let at = |user: &str| format!("tls://{user}@127.0.0.1:{}", nats.port(0));
    let ca = pki.ca.to_str().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let log = tmp.path().join("replica.log");
    let relay_url = at("relay:relay-secret");
    let server: Proc = start_replica_until_ready(
        || {
            let extra = ["--nats-ca-file", ca, "--relay-nats", &relay_url, "--relay-nats-ca-file", ca];
            replica(&tmp.path().join("r1"), &http, &at("replica:replica-secret"), &extra)
        },
        &http,
        &log,
    );
    let c = Client::new(&format!("http://{http}"));
    c.create_ledger(7);

    // The relay (on the lease holder) publishes the events; the reader may consume them.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ca_only = NatsSecurity { ca_file: Some(pki.ca.clone()), ..Default::default() };
    let reader = NatsEndpoint::new(at("reader:reader-secret"), ca_only.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        match runtime.block_on(read_stream_from(&reader, "BURSAR_EVENTS", Duration::from_secs(10))) {
            Ok(stored) if !stored.is_empty() => break stored,
            other => assert!(Instant::now() < deadline, "no relayed event in 60 s: {other:?}\n{}", server.log_text()),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stored[0].bursar_seq, Some(1));
    assert!(stored[0].subject.starts_with("bursar.events."), "{}", stored[0].subject);

    // The relay user cannot append to the cluster's log: it is in another account.
    runtime.block_on(async {
        let relay = NatsEndpoint::new(relay_url.clone(), ca_only.clone());
        let client = relay.connect(Duration::from_secs(10), |o| o).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let forged = async { js.publish("bursar_log.entries", "forged".into()).await?.await };
        assert!(forged.await.is_err(), "the relay user must not reach the log stream");
    });
    let text = server.log_text();
    assert!(!text.contains("replica-secret") && !text.contains("relay-secret"), "a secret in the log:\n{text}");
    drop(server);

    // Refusals stop `bursar start` with the cause, never the secret.
    let http2 = format!("127.0.0.1:{}", free_port());
    let text = fails(replica(&tmp.path().join("r2"), &http2, &at("replica:wrong-pw"), &["--nats-ca-file", ca]));
    assert!(text.contains("refused the credentials (authorization violation)"), "{text}");
    assert!(text.contains("nats_auth_refused") && !text.contains("wrong-pw"), "{text}");

    let missing = tmp.path().join("no-such-ca.pem");
    let text = fails(replica(
        &tmp.path().join("r3"),
        &http2,
        &at("replica:replica-secret"),
        &["--nats-ca-file", missing.to_str().unwrap()],
    ));
    assert!(text.contains("--nats-ca-file") && text.contains("no-such-ca.pem"), "{text}");
    assert!(!text.contains("replica-secret"), "{text}");
}
