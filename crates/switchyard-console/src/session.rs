//! A console session: the person's API token in an `HttpOnly` cookie (a
//! script on the page cannot read it, and it never appears in a URL), and
//! a CSRF token derived from it that the page sends back as a header on
//! every request. A cross-site form or fetch carries the cookie at most
//! (and `SameSite=Strict` stops even that), never the header: the server
//! accepts a cookie only with the matching header.
//!
//! The CSRF token is a keyed hash of the session token, not state kept by
//! one plane, so any plane of a cluster (and a leader a request is passed
//! to) checks it alike.

use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "switchyard_session";
pub const CSRF_COOKIE: &str = "switchyard_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a browser keeps a session (it ends sooner at logout).
pub const MAX_AGE_S: u64 = 12 * 3600;

/// The CSRF token of a session token.
pub fn csrf_for(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"switchyard console csrf v1\0");
    h.update(token.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the CSRF token of `token`, compared in constant time.
pub fn csrf_matches(token: &str, given: &str) -> bool {
    let want = csrf_for(token);
    want.len() == given.len()
        && want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A cookie's value from a `Cookie` header (`a=1; b=2`).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Tokens are sent in a cookie as they are: only characters a cookie
/// value may hold without quoting (RFC 6265 `cookie-octet`).
pub fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.bytes().all(|b| {
            b == 0x21
                || (0x23..=0x2B).contains(&b)
                || (0x2D..=0x3A).contains(&b)
                || (0x3C..=0x5B).contains(&b)
                || (0x5D..=0x7E).contains(&b)
        })
}

/// The two `Set-Cookie` values that open a session. `secure` when the
/// console is served over HTTPS.
pub fn open(token: &str, secure: bool) -> [String; 2] {
    let s = if secure { "; Secure" } else { "" };
    [
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_S}{s}"
        ),
        format!(
            "{CSRF_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={MAX_AGE_S}{s}",
            csrf_for(token)
        ),
    ]
}

/// The two `Set-Cookie` values that end it.
pub fn close(secure: bool) -> [String; 2] {
    let s = if secure { "; Secure" } else { "" };
    [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{s}"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0{s}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_belongs_to_one_session_token() {
        let a = csrf_for("token-a");
        assert!(csrf_matches("token-a", &a));
        assert!(!csrf_matches("token-b", &a));
        assert!(!csrf_matches("token-a", ""));
        assert!(!csrf_matches("token-a", &a[..10]));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let h = "other=1; switchyard_session=abc=def; switchyard_csrf=x";
        assert_eq!(cookie(h, SESSION_COOKIE), Some("abc=def"));
        assert_eq!(cookie(h, CSRF_COOKIE), Some("x"));
        assert_eq!(cookie(h, "missing"), None);
    }

    #[test]
    fn a_session_cookie_is_http_only_and_strict() {
        let [session, csrf] = open("t0k", true);
        assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
        assert!(session.contains("Secure"));
        assert!(!csrf.contains("HttpOnly"), "the page must read it");
        assert!(cookie_safe("lab-operate-token"));
        assert!(!cookie_safe("a;b"));
        assert!(!cookie_safe("a b"));
    }
}
