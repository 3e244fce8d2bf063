//! A small blocking client of the HTTP/JSON API (ureq, rustls with ring):
//! bearer key, a fresh Idempotency-Key per POST unless one is given, retries
//! with backoff on connection errors and 503s (reusing the same key), and
//! problem+json errors turned into [`CliError::Api`].

use super::{CliError, Conn, Problem};
use std::time::Duration;

/// Longest response body read (a page of 1000 transfers is about 400 KiB).
const BODY_LIMIT: u64 = 64 << 20;
/// Longest wait between two tries, whatever `Retry-After` says.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A successful response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// `Idempotent-Replayed: true`: the server answered from its record of
    /// an earlier request with the same Idempotency-Key; nothing executed.
    pub replayed: bool,
}

impl Reply {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, CliError> {
        serde_json::from_str(&self.body).map_err(|e| {
            CliError::Other(format!(
                "the server's response is not what this client expects ({e}): {}",
                snippet(&self.body)
            ))
        })
    }

    /// With `--json`, prints the body as the server sent it (`None`);
    /// otherwise parses it for a table or a record.
    pub fn parsed<T: serde::de::DeserializeOwned>(&self, json: bool) -> Result<Option<T>, CliError> {
        if json {
            super::output::json_body(&self.body)?;
            return Ok(None);
        }
        self.json().map(Some)
    }
}

pub struct Api {
    agent: ureq::Agent,
    base: String,
    key: Option<String>,
    retries: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A new random Idempotency-Key: a UUID v4.
pub fn new_idempotency_key() -> Result<String, CliError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| CliError::Other(format!("the system's random source failed: {e}")))?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid().to_string())
}

/// Checks a user-given Idempotency-Key the way the server does.
pub fn check_idempotency_key(k: &str) -> Result<(), CliError> {
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(CliError::Usage("--idempotency-key must be 1 to 255 printable ASCII characters".into()));
    }
    Ok(())
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved
/// characters are kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of a body, for error messages.
fn snippet(body: &str) -> String {
    let t = body.trim();
    if t.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = t.chars().take(200).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    s.replace(['\n', '\r'], " ")
}

impl Api {
    pub fn new(conn: &Conn, timeout: Duration) -> Result<Api, CliError> {
        let base = conn.url.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            return Err(CliError::Usage(format!("--url must start with http:// or https://, not {:?}", conn.url)));
        }
        if timeout.is_zero() {
            return Err(CliError::Usage("--timeout must be at least 1 second".into()));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
            .max_redirects(0)
            .user_agent(concat!("bursar-cli/", env!("CARGO_PKG_VERSION")));
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Other(format!("reading --ca-cert {}: {e}", path.display())))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(CliError::Other(format!("--ca-cert {}: not a PEM file: {e}", path.display())));
                    }
                }
            }
            if certs.is_empty() {
                return Err(CliError::Other(format!("--ca-cert {} holds no PEM certificate", path.display())));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        config = config.tls_config(tls.build());
        Ok(Api { agent: config.build().into(), base, key: conn.key.clone(), retries: conn.retries })
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Reply, CliError> {
        let mut p = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            p.push(if i == 0 { '?' } else { '&' });
            p.push_str(k);
            p.push('=');
            p.push_str(&encode(v));
        }
        self.send(Method::Get, &p, None, None)
    }

    /// A POST with a JSON body and the given Idempotency-Key (the same on
    /// every retry).
    pub fn post(&self, path: &str, body: &[u8], idempotency_key: &str) -> Result<Reply, CliError> {
        self.send(Method::Post, path, Some(body), Some(idempotency_key))
    }

    pub fn delete(&self, path: &str, idempotency_key: &str) -> Result<Reply, CliError> {
        self.send(Method::Delete, path, None, Some(idempotency_key))
    }

    fn send(&self, method: Method, path: &str, body: Option<&[u8]>, key: Option<&str>) -> Result<Reply, CliError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            let outcome = self.once(method, &url, body, key);
            let (retry, wait, err) = match outcome {
                Ok(reply) => return Ok(reply),
                Err(Failure::Transport(e)) => {
                    let retry = match &e {
                        ureq::Error::Io(io) => transient(io),
                        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::BodyStalled => true,
                        _ => false,
                    };
                    let msg = format!("{} {url}: {}", method.name(), describe_transport(&e));
                    (retry, None, CliError::Transport(msg))
                }
                Err(Failure::Status { problem, retry_after }) => {
                    // 503 (overloaded, timeout, store full), a request with
                    // the same key still in flight, and an internal error of
                    // unknown outcome: all safe to retry with the same key.
                    let retry = problem.status == 503
                        || (problem.status == 409 && problem.code == "idempotency_request_in_flight")
                        || (problem.status == 500
                            && problem.code == "internal_error"
                            && (key.is_some() || method == Method::Get));
                    (retry, retry_after, CliError::Api(problem))
                }
            };
            if !retry || attempt >= self.retries {
                return Err(err);
            }
            let backoff = Duration::from_millis(200u64 << attempt.min(6));
            std::thread::sleep(wait.unwrap_or(backoff).min(BACKOFF_MAX));
            attempt += 1;
        }
    }

    fn once(&self, method: Method, url: &str, body: Option<&[u8]>, key: Option<&str>) -> Result<Reply, Failure> {
        let auth = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let response = match method {
            Method::Get => {
                let mut r = self.agent.get(url).header("accept", "application/json");
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            Method::Delete => {
                let mut r = self.agent.delete(url).header("accept", "application/json");
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                if let Some(k) = key {
                    r = r.header("idempotency-key", k);
                }
                r.call()
            }
            Method::Post => {
                let mut r = self.agent.post(url).header("accept", "application/json");
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                if let Some(k) = key {
                    r = r.header("idempotency-key", k);
                }
                r.content_type("application/json").send(body.unwrap_or(b"{}"))
            }
        };
        let mut response = response.map_err(Failure::Transport)?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let replayed = header("idempotent-replayed").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        let bytes = response.body_mut().with_config().limit(BODY_LIMIT).read_to_vec().map_err(Failure::Transport)?;
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if (200..300).contains(&status) {
            return Ok(Reply { status, body, replayed });
        }
        Err(Failure::Status { problem: parse_problem(status, &body), retry_after })
    }
}

enum Failure {
    Transport(ureq::Error),
    Status { problem: Problem, retry_after: Option<Duration> },
}

/// Connection trouble that a new try may not meet (not a TLS or protocol
/// error, which would only repeat).
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::TimedOut
            | K::Interrupted
            | K::AddrNotAvailable
    )
}

fn describe_transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::ConnectionFailed => "cannot connect (is the server running?)".into(),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot connect: {io} (is the server running, and is --url right?)")
        }
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t}); raise --timeout"),
        other => {
            let m = other.to_string();
            if m.contains("certificate") {
                format!("{m} (to trust a self-signed server, pass its certificate with --ca-cert FILE)")
            } else {
                m
            }
        }
    }
}

/// A problem+json body, or a stand-in for a body that is not one.
pub fn parse_problem(status: u16, body: &str) -> Problem {
    #[derive(serde::Deserialize)]
    struct Body {
        code: String,
        #[serde(default)]
        detail: String,
        #[serde(default)]
        field: Option<String>,
        #[serde(default)]
        request_id: Option<String>,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(b) => Problem { status, code: b.code, detail: b.detail, field: b.field, request_id: b.request_id },
        Err(_) => {
            Problem { status, code: format!("http_{status}"), detail: snippet(body), field: None, request_id: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_parses() {
        assert_eq!(encode("a:1 /x"), "a%3A1%20%2Fx");
        assert_eq!(encode("7f1d-ab_c.~"), "7f1d-ab_c.~");
        let p = parse_problem(422, r#"{"code":"exceeds_credits","detail":"d","field":"amount","status":422}"#);
        assert_eq!((p.code.as_str(), p.field.as_deref()), ("exceeds_credits", Some("amount")));
        let p = parse_problem(502, "<html>bad gateway</html>");
        assert_eq!(p.code, "http_502");
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("abc-123").is_ok());
        let k = new_idempotency_key().unwrap();
        assert_eq!((k.len(), k.as_bytes()[14]), (36, b'4'));
    }

    /// A server that answers each connection with the next canned response
    /// (`None`: close without answering) and records the Idempotency-Keys.
    fn fake_server(replies: Vec<Option<&'static str>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut keys = Vec::new();
            for reply in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if let Some(v) = l.strip_prefix("idempotency-key:") {
                        keys.push(v.trim().to_string());
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let mut stream = stream;
                if let Some(r) = reply {
                    stream.write_all(r.as_bytes()).unwrap();
                }
            }
            keys
        });
        (url, handle)
    }

    fn conn(url: &str, retries: u32) -> Conn {
        Conn { url: url.into(), key: Some("k".into()), json: false, ca_cert: None, retries }
    }

    #[test]
    fn retries_reuse_the_idempotency_key() {
        let busy = "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\ncontent-type: application/problem+json\r\n\
                    connection: close\r\ncontent-length: 41\r\n\r\n{\"code\":\"overloaded\",\"detail\":\"busy now\"}";
        let created = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nconnection: close\r\n\
                       content-length: 8\r\n\r\n{\"id\":1}";
        let (url, server) = fake_server(vec![None, Some(busy), Some(created)]);
        let api = Api::new(&conn(&url, 3), Duration::from_secs(10)).unwrap();
        let reply = api.post("/v1/ledgers", b"{}", "same-key").unwrap();
        assert_eq!((reply.status, reply.body.as_str(), reply.replayed), (201, "{\"id\":1}", false));
        assert_eq!(server.join().unwrap(), ["same-key", "same-key", "same-key"]);

        // Out of retries: the last problem is the error.
        let (url, server) = fake_server(vec![Some(busy), Some(busy)]);
        let api = Api::new(&conn(&url, 1), Duration::from_secs(10)).unwrap();
        match api.post("/v1/ledgers", b"{}", "k2") {
            Err(CliError::Api(p)) => assert_eq!(p.to_string(), "overloaded: busy now"),
            other => panic!("{other:?}"),
        }
        assert_eq!(server.join().unwrap().len(), 2);

        // A 4xx is not retried.
        let refused = "HTTP/1.1 422 Unprocessable Entity\r\nconnection: close\r\ncontent-length: 63\r\n\r\n\
                       {\"code\":\"exceeds_credits\",\"detail\":\"too much\",\"field\":\"amount\"}";
        let (url, server) = fake_server(vec![Some(refused)]);
        let api = Api::new(&conn(&url, 5), Duration::from_secs(10)).unwrap();
        let e = api.post("/v1/transfers", b"{}", "k3").unwrap_err();
        assert_eq!(e.to_string(), "exceeds_credits: too much (field amount)");
        assert_eq!(server.join().unwrap().len(), 1);
    }
}
