//! The server list: comma-separated URLs, parsed, with the credentials
//! they carry taken out. async-nats 0.51 never reads a URL's user info (its
//! CONNECT only sends the options' credentials), which is why
//! `nats://user:pw@host` used to be refused: the credentials must become
//! connect options, and the addresses handed to the client carry none (so
//! no error or log line of the client can show them).

use crate::error::{NatsError, NatsErrorKind};
use async_nats::ServerAddr;
use std::fmt;

/// Most URLs in one list: a NATS cluster has a handful of servers.
const URLS_MAX: usize = 64;

/// Credentials written in the URLs.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum UrlCredentials {
    #[default]
    None,
    /// `nats://user:password@host`
    UserPassword { user: String, password: String },
    /// `nats://token@host`
    Token(String),
}

impl fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlCredentials::None => write!(f, "None"),
            UrlCredentials::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, password: *** }}"),
            UrlCredentials::Token(_) => write!(f, "Token(***)"),
        }
    }
}

/// The parsed list.
#[derive(Clone, Debug)]
pub struct ServerList {
    /// The addresses, without user info.
    pub servers: Vec<ServerAddr>,
    /// What every URL carries (they must agree).
    pub credentials: UrlCredentials,
    /// Some URL is `tls://`.
    pub tls: bool,
}

/// Parses `urls` (comma-separated; `host:port` means `nats://host:port`).
/// Every URL must carry the same credentials, or none.
pub fn parse_servers(urls: &str) -> Result<ServerList, NatsError> {
    let items: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if items.is_empty() {
        return Err(NatsError::new(NatsErrorKind::BadUrl, "no NATS server URL given"));
    }
    if items.len() > URLS_MAX {
        return Err(NatsError::new(
            NatsErrorKind::BadUrl,
            format!("{} NATS server URLs given; at most {URLS_MAX}", items.len()),
        ));
    }
    let mut list =
        ServerList { servers: Vec::with_capacity(items.len()), credentials: UrlCredentials::None, tls: false };
    for (i, item) in items.iter().enumerate() {
        let (server, credentials) = parse_one(item)?;
        if i == 0 {
            list.credentials = credentials;
        } else if credentials != list.credentials {
            return Err(NatsError::new(
                NatsErrorKind::MixedCredentials,
                format!(
                    "NATS server URL {} of {} ({}) carries other credentials than the first ({}): give every URL \
                     the same user:password@ or token@, or none",
                    i + 1,
                    items.len(),
                    redact(item),
                    redact(items[0])
                ),
            ));
        }
        list.tls |= server.tls_required();
        list.servers.push(server);
    }
    Ok(list)
}

/// One URL: its address without user info, and the credentials it had.
fn parse_one(item: &str) -> Result<(ServerAddr, UrlCredentials), NatsError> {
    let bad = |why: String| NatsError::new(NatsErrorKind::BadUrl, format!("NATS server URL {}: {why}", redact(item)));
    let text = if item.contains("://") { item.to_string() } else { format!("nats://{item}") };
    // The url crate's messages name the part that failed, never the input.
    let mut url = url::Url::parse(&text).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(bad(format!("scheme {:?} is not supported (use nats:// or tls://)", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".to_string()));
    }
    let credentials = credentials_of(&url, &bad)?;
    // Infallible for URLs with a host (checked above); the Err carries no data.
    url.set_username("")
        .and_then(|()| url.set_password(None))
        .map_err(|()| bad("cannot remove the user info".into()))?;
    let server = ServerAddr::from_url(url).map_err(|e| bad(e.to_string()))?;
    Ok((server, credentials))
}

/// The URL's user info as credentials; `bad` makes the `BadUrl` error that
/// names the (redacted) URL.
fn credentials_of(url: &url::Url, bad: &dyn Fn(String) -> NatsError) -> Result<UrlCredentials, NatsError> {
    let decode = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad(format!("the {what} is not UTF-8 once percent-decoded")))
    };
    let user = decode(url.username(), "user")?;
    match url.password() {
        Some(_) if user.is_empty() => Err(bad("a password without a user".to_string())),
        Some(password) => {
            let password = decode(password, "password")?;
            if password.is_empty() {
                return Err(bad("an empty password".to_string()));
            }
            Ok(UrlCredentials::UserPassword { user, password })
        }
        None if user.is_empty() => Ok(UrlCredentials::None),
        None => Ok(UrlCredentials::Token(user)),
    }
}

/// `urls` with every URL's user info replaced by `***`: safe to print. Works
/// on any text (a URL that does not parse is redacted too).
pub fn redact(urls: &str) -> String {
    urls.split(',').map(|u| redact_one(u.trim())).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(urls: &str) -> UrlCredentials {
        parse_servers(urls).unwrap_or_else(|e| panic!("{urls}: {e}")).credentials
    }

    #[test]
    fn user_password_and_token_are_taken_out_of_the_urls() {
        let list =
            parse_servers("nats://bursar:s3cr%40t@127.0.0.1:4222, nats://bursar:s3cr%40t@127.0.0.1:4223").unwrap();
        assert_eq!(list.credentials, UrlCredentials::UserPassword { user: "bursar".into(), password: "s3cr@t".into() });
        let shown: Vec<&str> = list.servers.iter().map(|s| s.as_url_str()).collect();
        assert_eq!(shown, ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]);
        assert!(!list.tls);
        assert_eq!(creds("tls://t0ken@example.com:4222"), UrlCredentials::Token("t0ken".into()));
        assert_eq!(creds("example.com:4222"), UrlCredentials::None);
        assert!(parse_servers("tls://example.com,nats://example.org").unwrap().tls);
    }

    #[test]
    fn a_list_whose_urls_carry_different_credentials_is_refused_without_showing_them() {
        for urls in [
            "nats://a:pw1@h1:4222,nats://a:pw2@h2:4222",
            "nats://a:pw1@h1:4222,nats://h2:4222",
            "nats://h1:4222,nats://tokA@h2:4222",
            "nats://tokA@h1,nats://tokB@h2",
        ] {
            let e = parse_servers(urls).unwrap_err();
            assert_eq!(e.kind, NatsErrorKind::MixedCredentials, "{urls}");
            assert!(e.message.contains("URL 2 of 2"), "{e}");
            for secret in ["pw1", "pw2", "tokA", "tokB"] {
                assert!(!e.message.contains(secret), "{e} shows {secret}");
            }
        }
    }

    #[test]
    fn bad_urls_get_a_clear_error_without_their_secrets() {
        for (urls, says) in [
            ("", "no NATS server URL"),
            (" , ", "no NATS server URL"),
            ("http://u:secret@h:4222", "scheme \"http\" is not supported"),
            ("ws://h:4222", "scheme \"ws\""),
            ("nats://u:secret@h:notaport", "invalid port"),
            ("nats://:secret@h:4222", "a password without a user"),
            ("nats://u:@h:4222", ""),
            ("nats://u:%ff%fe@h:4222", "not UTF-8"),
        ] {
            let result = parse_servers(urls);
            if urls == "nats://u:@h:4222" {
                // `user:` with nothing after it is a token-less user: the url crate drops the empty password.
                assert_eq!(result.unwrap().credentials, UrlCredentials::Token("u".into()));
                continue;
            }
            let e = result.unwrap_err();
            assert_eq!(e.kind, NatsErrorKind::BadUrl, "{urls}");
            assert!(e.message.contains(says), "{urls}: {e}");
            assert!(!e.message.contains("secret"), "{e}");
        }
        let many = vec!["nats://h:4222"; URLS_MAX + 1].join(",");
        assert!(parse_servers(&many).unwrap_err().message.contains("at most"));
    }

    #[test]
    fn redaction_hides_user_info_only() {
        assert_eq!(
            redact("nats://u:p@h:4222, tls://tok@h2:4222,h3:4222"),
            "nats://***@h:4222,tls://***@h2:4222,h3:4222"
        );
        assert_eq!(redact("u:p@h:4222/x@y"), "***@h:4222/x@y");
        assert_eq!(redact("nats://u:p@ss@h"), "nats://***@h");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let shown = format!("{:?}", parse_servers("nats://u:hunter2@h,nats://u:hunter2@h2").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", UrlCredentials::Token("t0k3n".into()));
        assert!(!shown.contains("t0k3n"), "{shown}");
    }
}
