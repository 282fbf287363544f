//! A config as the control plane distributes it: the TOML text itself, and
//! its version, a hash of that text. Processes parse the text themselves
//! (with their own environment for secrets), so what travels is exactly
//! what an operator wrote, and two processes report the same version only
//! when they run the same text.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDoc {
    /// [`config_version`] of `text`.
    pub version: String,
    /// The config file's TOML, as written.
    pub text: String,
}

impl ConfigDoc {
    pub fn new(text: String) -> ConfigDoc {
        ConfigDoc {
            version: config_version(&text),
            text,
        }
    }

    /// Whether `version` is the hash of `text` (a document read from disk
    /// or the wire that was not altered on the way).
    pub fn is_intact(&self) -> bool {
        self.version == config_version(&self.text)
    }
}

/// `c` and the first 16 hex digits of the text's SHA-256: short enough for
/// a status line or a metric label, and 64 bits make a collision between
/// two configs of one deployment out of reach. Identical text, identical
/// version; any other byte, another one.
pub fn config_version(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(17);
    out.push('c');
    for b in &digest[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_texts_hash() {
        // SHA-256("") = e3b0c44298fc1c14...
        assert_eq!(config_version(""), "ce3b0c44298fc1c14");
        let a = ConfigDoc::new("[edge]\n".into());
        assert_eq!(a, ConfigDoc::new("[edge]\n".into()));
        assert_ne!(a.version, ConfigDoc::new("[edge] \n".into()).version);
        assert_eq!(a.version.len(), 17);
        assert!(a.is_intact());
        let torn = ConfigDoc {
            text: "[edge".into(),
            ..a
        };
        assert!(!torn.is_intact());
    }
}
