//! The console's files, compiled in. Plain HTML, CSS and JavaScript with
//! no build step, so what runs is what the repository holds.

use sha2::{Digest, Sha256};

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

impl Asset {
    /// A strong validator for `ETag`: the content's hash, so a new binary
    /// with changed assets is never served from a browser's stale copy.
    pub fn etag(&self) -> String {
        let d = Sha256::digest(self.bytes);
        let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    }
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {
        Asset {
            name: $name,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $name)),
            content_type: $ct,
        }
    };
}

pub const ALL: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("login.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
];

/// The asset of that name (no paths: `/ui/assets/NAME`).
pub fn get(name: &str) -> Option<&'static Asset> {
    ALL.iter().find(|a| a.name == name)
}

/// The login page, with `error` (escaped) where the page marks it.
pub fn login_page(error: Option<&str>) -> String {
    let page = String::from_utf8_lossy(get("login.html").expect("login.html is embedded").bytes);
    let note = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\">{}</p>",
                crate::markdown::escape(e)
            )
        })
        .unwrap_or_default();
    page.replace("<!--error-->", &note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_the_login_page_shows_an_escaped_error() {
        for a in ALL {
            assert!(!a.bytes.is_empty(), "{} is empty", a.name);
        }
        let page = login_page(Some("<script>x</script>"));
        assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
        assert!(!page.contains("<script>x"), "{page}");
        assert!(get("../Cargo.toml").is_none());
    }
}
