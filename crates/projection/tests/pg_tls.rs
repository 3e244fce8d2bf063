//! The projection's PostgreSQL connection over TLS, against a real server
//! with `ssl = on`, a certificate from a private CA made here, and
//! `hostssl`-only access (docs/projection.md).

use bursar_projection::pg_tls::{PgConnector, PgTlsOptions, SslMode};
use bursar_testkit::postgres::TempPostgres;
use std::path::{Path, PathBuf};

/// A CA and a server certificate it issued for `localhost` (no IP name).
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn pki(ca_name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key generation");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key generation");
    let server = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    Pki { ca_pem: ca.pem(), server_pem: server.pem(), server_key_pem: key.serialize_pem() }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a temp file");
    path
}

fn conninfo(pg: &TempPostgres, host: &str, extra: &str) -> String {
    format!("host={host} hostaddr=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=5 {extra}", pg.port())
}

fn connect(conninfo: &str, mode: SslMode, ca: Option<&Path>) -> Result<postgres::Client, String> {
    let options = PgTlsOptions { mode: Some(mode), ca_file: ca.map(Path::to_path_buf) };
    PgConnector::new(conninfo, &options).and_then(|c| c.connect()).map_err(|e| e.to_string())
}

fn is_encrypted(client: &mut postgres::Client) -> bool {
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).expect("pg_stat_ssl").get(0)
}

#[test]
fn projection_connects_over_tls_only_to_the_right_server() {
    let (pki, other) = (pki("bursar test CA"), pki("another CA"));
    let pg = TempPostgres::start_tls(&pki.server_pem, &pki.server_key_pem).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let other_ca = write(dir.path(), "other-ca.pem", &other.ca_pem);

    // verify-full with the private CA, by flag and by `sslrootcert` in the string.
    let mut client = connect(&conninfo(&pg, "localhost", ""), SslMode::VerifyFull, Some(&ca)).expect("verify-full");
    assert!(is_encrypted(&mut client));
    let in_string = conninfo(&pg, "localhost", &format!("sslmode=verify-full sslrootcert='{}'", ca.display()));
    let mut client = PgConnector::new(&in_string, &PgTlsOptions::default()).unwrap().connect().expect("sslrootcert");
    assert!(is_encrypted(&mut client));
    let url = format!(
        "postgresql://postgres@localhost:{}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        pg.port(),
        ca.display()
    );
    assert!(is_encrypted(&mut PgConnector::new(&url, &PgTlsOptions::default()).unwrap().connect().expect("URL form")));

    // Another CA: refused, saying why.
    let err = connect(&conninfo(&pg, "localhost", ""), SslMode::VerifyFull, Some(&other_ca)).err().expect("wrong CA");
    assert!(err.contains("invalid peer certificate") && err.contains("UnknownIssuer"), "{err}");
    let err = connect(&conninfo(&pg, "localhost", ""), SslMode::VerifyCa, Some(&other_ca)).err().expect("wrong CA");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // A name the certificate does not carry: verify-full refuses, verify-ca (chain only) accepts.
    let err = connect(&conninfo(&pg, "127.0.0.1", ""), SslMode::VerifyFull, Some(&ca)).err().expect("wrong name");
    assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
    assert!(is_encrypted(&mut connect(&conninfo(&pg, "127.0.0.1", ""), SslMode::VerifyCa, Some(&ca)).unwrap()));

    // require without a CA encrypts (libpq's meaning); with the wrong CA it checks the chain.
    assert!(is_encrypted(&mut connect(&conninfo(&pg, "localhost", ""), SslMode::Require, None).unwrap()));
    assert!(connect(&conninfo(&pg, "localhost", ""), SslMode::Require, Some(&other_ca)).is_err());

    // The server takes TCP clients over TLS only: plain text is refused.
    let err = connect(&conninfo(&pg, "localhost", ""), SslMode::Disable, None).err().expect("plain text");
    assert!(err.contains("no encryption"), "{err}");
}
