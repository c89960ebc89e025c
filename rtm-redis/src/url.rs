//! Redis URLs for humans: what is wrong with one, and how to print one
//! without its password.

use redis::IntoConnectionInfo;

/// The accepted shapes, for error messages.
const SHAPES: &str =
    "expected redis://[user:password@]host[:port][/db], rediss://… for TLS, or unix:///path/to/socket";

/// Parses `url` into redis' connection info, or says in plain words what is
/// wrong with it (the URL is quoted with its password hidden).
pub(crate) fn connection_info(url: &str) -> Result<redis::ConnectionInfo, String> {
    url.into_connection_info().map_err(|err| {
        let reason = explain(url).unwrap_or_else(|| err.to_string());
        format!("invalid Redis URL '{}': {reason}", redact(url))
    })
}

/// A plain-words reason `url` is not a Redis URL, when one can be told.
pub(crate) fn explain(url: &str) -> Option<String> {
    let url = url.trim();
    if url.is_empty() {
        return Some(format!("it is empty; {SHAPES}"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(format!("it has no scheme; {SHAPES}"));
    };
    match scheme {
        "redis" | "valkey" | "rediss" | "valkeys" => {}
        "unix" | "redis+unix" => {
            return rest
                .is_empty()
                .then(|| format!("no socket path after '{scheme}://'; {SHAPES}"));
        }
        other => return Some(format!("unknown scheme '{other}://'; {SHAPES}")),
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return Some(format!("no host; {SHAPES}"));
    }
    // `[::1]:6379` or `host:6379`: the port is what follows the last ':' outside brackets.
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(_, tail)| tail.strip_prefix(':')),
        None => Some(host_port.split_once(':').map(|(_, port)| port)),
    };
    match port {
        None => return Some(format!("an IPv6 host must end with ']'; {SHAPES}")),
        Some(Some(port)) if port.parse::<u16>().is_err() => {
            return Some(format!("the port '{port}' is not a number from 0 to 65535"))
        }
        Some(_) => {}
    }
    let path = &rest[authority.len()..];
    let db = path
        .strip_prefix('/')
        .map(|p| p.split(['?', '#']).next().unwrap_or(""));
    match db {
        Some(db) if !db.is_empty() && db.parse::<i64>().is_err() => Some(format!(
            "the database '{db}' after the host is not a number (redis://host:6379/0)"
        )),
        _ => None,
    }
}

/// `url` with the password, if any, replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://secret@host`: redis-rs takes a lone userinfo as the password.
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_url_has_nothing_to_explain() {
        for url in [
            "redis://127.0.0.1:6379/",
            "redis://127.0.0.1",
            "redis://user:pw@host:6379/2",
            "redis://[::1]:6379/0",
            "unix:///tmp/redis.sock",
            "rediss://redis.example.com:6380",
        ] {
            assert_eq!(explain(url), None, "{url}");
            assert!(connection_info(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("", "empty"),
            ("127.0.0.1:6379", "no scheme"),
            ("http://x", "unknown scheme 'http://'"),
            ("redis://", "no host"),
            ("redis://foo:bar:baz", "the port 'bar:baz'"),
            ("redis://host:99999", "the port '99999'"),
            ("redis://host:6379/zero", "the database 'zero'"),
            ("redis://[::1:6379", "IPv6"),
            ("rediss://host:99999", "the port '99999'"),
        ];
        for (url, expected) in cases {
            let message = connection_info(url).err().unwrap_or_default();
            assert!(message.contains(expected), "{url}: {message}");
        }
    }

    #[test]
    fn passwords_never_reach_the_message() {
        let message = connection_info("redis://app:s3cret@host:bad/").unwrap_err();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("redis://app:***@host:bad/"), "{message}");
        assert_eq!(redact("redis://s3cret@h/"), "redis://***@h/");
        assert_eq!(redact("redis://h:1/"), "redis://h:1/");
    }
}
