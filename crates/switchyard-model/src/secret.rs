//! Comparing secrets (tokens, the forward secret) without telling, by how
//! long the comparison takes, how much of a guess was right.

/// Whether `a` equals `b`, taking the same time whatever bytes differ.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(super::equal(b"secret-token", b"secret-token"));
        assert!(!super::equal(b"secret-token", b"secret-tokeN"));
        assert!(!super::equal(b"secret", b"secret-token"));
    }
}
