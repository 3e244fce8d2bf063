//! Cluster mode on secured NATS servers (real `nats-server`s, a private CA
//! generated per test): a replica reaches a server that requires a
//! user/password over TLS, and commits through a 3-node cluster that
//! requires client certificates (mutual TLS); without the right password,
//! CA or client certificate, connecting fails at once with a message
//! saying which, and never showing the secret. Fails, never skips, when
//! `nats-server` is missing.

use bursar_cluster::log_stream::{ensure_stream, follow, publish_proposals};
use bursar_cluster::{ClusterConfig, replica};
use bursar_nats::{NatsEndpoint, NatsSecurity};
use bursar_server::message::{EngineMsg, Proposal};
use bursar_testkit::nats_cluster::NatsCluster;
use bursar_testkit::pki::TestPki;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const PASSWORD: &str = "pa55-w0rd";

fn config(urls: String, security: NatsSecurity, replicas: usize) -> ClusterConfig {
    let keys = bursar_cluster::ClusterKeys::parse(&"42".repeat(32)).expect("a valid test key");
    let mut config = ClusterConfig::new(String::new(), 1, keys);
    config.nats = NatsEndpoint::new(urls, security);
    config.replicas = replicas;
    config.connect_timeout = Duration::from_secs(20);
    config
}

fn with_ca(pki: &TestPki) -> NatsSecurity {
    NatsSecurity { ca_file: Some(pki.ca.clone()), ..Default::default() }
}

fn with_client_cert(pki: &TestPki, ca: &Path) -> NatsSecurity {
    NatsSecurity {
        ca_file: Some(ca.to_path_buf()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        ..Default::default()
    }
}

/// Connecting fails; returns the message, checked to hide the password.
async fn refused(config: &ClusterConfig) -> String {
    let started = Instant::now();
    let message = match replica::connect(config).await {
        Ok(_) => panic!("connecting to {:?} should have been refused", config.nats),
        Err(e) => e.to_string(),
    };
    assert!(started.elapsed() < config.connect_timeout, "refused, not timed out: {message}");
    assert!(!message.contains(PASSWORD) && !message.contains("wrong-pw"), "a secret in: {message}");
    message
}

/// Commits one proposal through the log stream on `config`'s connection
/// and returns its position once the follower delivers it.
async fn commit_one(config: &ClusterConfig) -> u64 {
    let client = replica::connect(config).await.unwrap_or_else(|e| panic!("{e}"));
    let js = async_nats::jetstream::new(client);
    // A fresh cluster elects its JetStream leaders first; with TLS routes on
    // a loaded machine (the whole suite running) that took over 60 s once.
    let deadline = Instant::now() + Duration::from_secs(180);
    while let Err(e) = ensure_stream(&js, config).await {
        assert!(Instant::now() < deadline, "no log stream after 180 s: {e}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (engine, mut delivered) = mpsc::channel(16);
    let (proposals, queued) = mpsc::channel(4);
    tokio::spawn(publish_proposals(js.clone(), config.clone(), queued, engine.clone()));
    tokio::spawn(follow(js, config.clone(), 0, engine));
    let origin = bursar_core::entry::Origin { node: 1, key_id: 0, boot: 1, proposal: 1 };
    // An empty body: a timer entry, which decodes.
    proposals.send(Proposal { origin, timestamp: 7, body: Vec::new() }).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), delivered.recv()).await {
            Ok(Some(EngineMsg::Committed(c))) => {
                assert_eq!(c.header.authentic_origin().map(|o| (o.node, o.proposal)), Some((1, 1)), "{c:?}");
                return c.position;
            }
            Ok(Some(EngineMsg::ProposalFailed(f))) => panic!("proposal failed: {}", f.reason),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the follower stopped"),
            Err(_) => panic!("nothing committed within 60 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reaches_a_server_requiring_a_password_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "main").unwrap();
    let stranger = TestPki::generate(dir.path(), "stranger").unwrap();
    let conf = format!(
        "{}authorization {{ users: [ {{ user: bursar, password: {PASSWORD:?} }} ] }}\n",
        pki.server_tls_block(false)
    );
    let nats = NatsCluster::start_with(&dir.path().join("nats"), 1, &conf).unwrap_or_else(|e| panic!("{e}"));
    let port = nats.port(0);
    let url = format!("tls://bursar:{PASSWORD}@127.0.0.1:{port}");

    assert_eq!(commit_one(&config(url.clone(), with_ca(&pki), 1)).await, 1);
    // The same with nats:// and the CA: TLS is required all the same.
    let plain_scheme = format!("nats://bursar:{PASSWORD}@127.0.0.1:{port}");
    replica::connect(&config(plain_scheme, with_ca(&pki), 1)).await.unwrap_or_else(|e| panic!("{e}"));

    let wrong = refused(&config(format!("tls://bursar:wrong-pw@127.0.0.1:{port}"), with_ca(&pki), 1)).await;
    assert!(wrong.contains("refused the credentials (authorization violation)"), "{wrong}");
    assert!(wrong.contains("check the user (bursar) and password in the URL"), "{wrong}");
    assert!(wrong.contains("tls://***@127.0.0.1"), "{wrong}");

    let none = refused(&config(format!("tls://127.0.0.1:{port}"), with_ca(&pki), 1)).await;
    assert!(none.contains("authorization violation") && none.contains("no credentials were given"), "{none}");

    let untrusted = refused(&config(url.clone(), with_ca(&stranger), 1)).await;
    assert!(untrusted.contains("TLS certificate of the NATS server"), "{untrusted}");
    assert!(untrusted.contains("is not trusted") && untrusted.contains("--nats-ca-file"), "{untrusted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_commits_through_a_3_node_cluster_requiring_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "main").unwrap();
    let stranger = TestPki::generate(dir.path(), "stranger").unwrap();
    let nats = NatsCluster::start_with(&dir.path().join("nats"), 3, &pki.server_tls_block(true))
        .unwrap_or_else(|e| panic!("{e}"));
    let urls: Vec<String> = (0..3).map(|i| format!("tls://127.0.0.1:{}", nats.port(i))).collect();
    let urls = urls.join(",");

    assert_eq!(commit_one(&config(urls.clone(), with_client_cert(&pki, &pki.ca), 3)).await, 1);

    let no_cert = refused(&config(urls.clone(), with_ca(&pki), 3)).await;
    assert!(no_cert.contains("ended the TLS handshake"), "{no_cert}");
    assert!(no_cert.contains("requires a client certificate"), "{no_cert}");

    let foreign_cert = refused(&config(urls, with_client_cert(&stranger, &pki.ca), 3)).await;
    assert!(foreign_cert.contains("ended the TLS handshake"), "{foreign_cert}");
    assert!(foreign_cert.contains("does not accept the client certificate --nats-cert-file"), "{foreign_cert}");
}

#[tokio::test]
async fn bad_security_options_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "main").unwrap();
    let prepare = |urls: &str, security: NatsSecurity| NatsEndpoint::new(urls, security).prepare().err();
    let url = "nats://127.0.0.1:1";

    let missing = NatsSecurity { ca_file: Some(dir.path().join("nope.pem")), ..Default::default() };
    let e = prepare(url, missing).unwrap();
    assert!(e.to_string().contains("--nats-ca-file") && e.to_string().contains("nope.pem"), "{e}");

    let key_as_ca = NatsSecurity { ca_file: Some(pki.client_key.clone()), ..Default::default() };
    assert!(prepare(url, key_as_ca).unwrap().to_string().contains("holds no PEM certificate"));

    let half = NatsSecurity { cert_file: Some(pki.client_cert.clone()), ..Default::default() };
    assert!(prepare(url, half).unwrap().to_string().contains("--nats-cert-file and --nats-key-file go together"));

    let seed = dir.path().join("seed.nk");
    std::fs::write(&seed, "SUnot-a-seed\n").unwrap();
    let both = NatsSecurity { creds_file: Some(seed.clone()), nkey_file: Some(seed.clone()), ..Default::default() };
    assert!(prepare(url, both).unwrap().to_string().contains("both --nats-creds-file and --nats-nkey-file"));
    let bad_seed = NatsSecurity { nkey_file: Some(seed), ..Default::default() };
    let e = prepare(url, bad_seed).unwrap().to_string();
    assert!(e.contains("holds no valid nkey user seed") && !e.contains("SUnot"), "{e}");

    let e = prepare("nats://u:hunter2@h1,nats://h2", NatsSecurity::default()).unwrap().to_string();
    assert!(e.contains("other credentials") && !e.contains("hunter2"), "{e}");
}
