//! OTLP ids: validity checks and hex encoding.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`, appended to `out` through a table (no `format!` per byte).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Why an id is refused, or `None` when it is valid. `required` ids may not be empty.
pub fn id_problem(id: &[u8], len: usize, required: bool) -> Option<String> {
    if id.is_empty() {
        return required.then(|| "is missing".to_string());
    }
    if id.len() != len {
        return Some(format!("has {} bytes; it must have {len}", id.len()));
    }
    if id.iter().all(|&b| b == 0) {
        return Some("is all zeros".to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_matches_the_standard_encoding() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(to_hex(&bytes), expected);
    }

    #[test]
    fn id_checks() {
        assert_eq!(id_problem(&[1; 16], 16, true), None);
        assert_eq!(id_problem(&[], 16, true).as_deref(), Some("is missing"));
        assert_eq!(id_problem(&[], 8, false), None);
        assert_eq!(
            id_problem(&[0; 16], 16, true).as_deref(),
            Some("is all zeros")
        );
        assert_eq!(
            id_problem(&[1; 15], 16, true).as_deref(),
            Some("has 15 bytes; it must have 16")
        );
    }
}
