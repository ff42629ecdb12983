//! What the HTTP load generator asks for: the server's address (from an `http://` URL) and
//! the bytes of the one request every connection sends, again and again.

use std::net::{SocketAddr, ToSocketAddrs};

/// The request every connection sends, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The server's address (the first the host name resolves to).
    pub addr: SocketAddr,
    /// The request's bytes: request line, headers, empty line (no body).
    pub request: Vec<u8>,
    /// Whether the method is `HEAD` (responses then have no body).
    pub head: bool,
    /// Whether connections are kept for more requests (else each request says
    /// `Connection: close`, and the client closes after its response).
    pub keep_alive: bool,
}

/// The parts of an `http://` URL the generator uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host[:port]` as written (for the `Host` header).
    pub authority: String,
    /// The host, without brackets for IPv6.
    pub host: String,
    /// The port (80 if none is written).
    pub port: u16,
    /// Path and query, `/` if empty; the fragment is dropped.
    pub path: String,
}

/// Splits an `http://host[:port][/path][?query]` URL.
///
/// # Errors
///
/// Another scheme (`https` included: the generator speaks plain HTTP/1.1), user info, an
/// empty host or a bad port.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "{url}: https is not supported; the generator speaks plain HTTP/1.1 (measure \
                 the server's plain port, or a TLS terminator's)"
            ))
        }
        _ => return Err(format!("{url}: not an http:// URL")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or("");
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if authority.contains('@') {
        return Err(format!("{url}: user info in the URL is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed '[' in the host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{url}: bad port '{p}'"))?,
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{url}: spaces or control characters in the path (percent-encode them)"
        ));
    }
    Ok(Url {
        authority: authority.to_string(),
        host: host.to_string(),
        port,
        path,
    })
}

/// Whether `s` is an HTTP token (a method or a header name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Target {
    /// The target of `url`: `method` with `headers` (`Name: value` each), and
    /// `Connection: close` unless `keep_alive`. Resolves the host.
    ///
    /// # Errors
    ///
    /// A bad URL, method or header, or a host that does not resolve.
    pub fn new(
        url: &str,
        method: &str,
        headers: &[String],
        keep_alive: bool,
    ) -> Result<Target, String> {
        let u = parse_url(url)?;
        if !is_token(method) {
            return Err(format!("--method: '{method}' is not an HTTP method"));
        }
        let mut req = format!("{method} {} HTTP/1.1\r\n", u.path);
        let mut has_host = false;
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("--header '{h}': write it as 'Name: value'"))?;
            let (name, value) = (name.trim(), value.trim());
            if !is_token(name) || value.contains(['\r', '\n']) {
                return Err(format!("--header '{h}': not a valid header"));
            }
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
            {
                return Err(format!("--header '{h}': requests have no body"));
            }
            has_host |= name.eq_ignore_ascii_case("host");
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has_host {
            req.insert_str(
                req.find("\r\n").unwrap_or(0) + 2,
                &format!("Host: {}\r\n", u.authority),
            );
        }
        if !keep_alive {
            req.push_str("Connection: close\r\n");
        }
        req.push_str("\r\n");
        let addr = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve {}: {e}", u.host))?
            .next()
            .ok_or_else(|| format!("{url}: {} resolves to no address", u.host))?;
        Ok(Target {
            url: url.to_string(),
            addr,
            request: req.into_bytes(),
            head: method.eq_ignore_ascii_case("HEAD"),
            keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let u = parse_url("http://127.0.0.1:8080/files/1k.bin?x=1#frag").unwrap();
        assert_eq!(
            u,
            Url {
                authority: "127.0.0.1:8080".into(),
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/files/1k.bin?x=1".into(),
            }
        );
        let u = parse_url("HTTP://localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = parse_url("http://[::1]:9000?q").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/?q")
        );
        for bad in [
            "https://x/",
            "ftp://x/",
            "x:80/",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://[::1/",
            "http://h/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_has_the_host_and_the_headers() {
        let t = Target::new("http://127.0.0.1:8080/a", "GET", &[], true).unwrap();
        assert_eq!(
            t.request,
            b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".to_vec()
        );
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(!t.head);
        let t = Target::new(
            "http://127.0.0.1/",
            "HEAD",
            &["X-A:  1 ".into(), "host: other".into()],
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(t.request).unwrap(),
            "HEAD / HTTP/1.1\r\nX-A: 1\r\nhost: other\r\nConnection: close\r\n\r\n"
        );
        assert!(t.head);
        for (method, header) in [
            ("GE T", "A: b"),
            ("GET", "no colon"),
            ("GET", "Bad Name: x"),
            ("GET", "Content-Length: 3"),
        ] {
            assert!(
                Target::new("http://127.0.0.1/", method, &[header.into()], true).is_err(),
                "{method} {header}"
            );
        }
    }
}
