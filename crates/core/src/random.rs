//! Randomness straight from the operating system's CSPRNG.

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Fills `buf` from the OS CSPRNG. Failure means the OS cannot give randomness at all, and no
/// secret may be produced without it, so this panics rather than degrade.
pub fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// `len` characters drawn uniformly from `[A-Za-z0-9]`: safe in URLs, shells and SQL literals.
pub fn alphanumeric(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill(&mut buf);
        // Rejection sampling: 248 = 4 * 62, so accepted bytes map uniformly onto the alphabet.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(ALPHANUMERIC[usize::from(b % 62)] as char);
        }
    }
    out
}

/// `bytes` random bytes as lowercase hex.
pub fn hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphanumeric_has_requested_length_and_alphabet() {
        let s = alphanumeric(100);
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(alphanumeric(32), alphanumeric(32));
    }

    #[test]
    fn hex_is_lowercase_hex() {
        let h = hex(5);
        assert_eq!(h.len(), 10);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
