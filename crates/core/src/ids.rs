//! OTLP ids: validity checks and hex encoding.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0x0f]];
        i += 1;
    }
    t
};

/// Lowercase hex of as many of `bytes` as `buf` holds (half its length) in `buf`: one table
/// load per byte, no `String` in between (pushing each digit as a `char` into a scratch
/// string, then copying it into the column, took ~270 instructions per trace id: ~2% of the
/// collector's at 10k spans/s).
fn hex_into<'a>(bytes: &[u8], buf: &'a mut [u8]) -> &'a [u8] {
    let bytes = &bytes[..bytes.len().min(buf.len() / 2)];
    for (pair, &b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[b as usize]);
    }
    &buf[..bytes.len() * 2]
}

/// Lowercase hex of `bytes` (at most 32 of them) in `buf`, as text.
fn hex_in<'a>(bytes: &[u8], buf: &'a mut [u8; 64]) -> &'a str {
    // Always ASCII; the check is a few instructions for 64 bytes.
    std::str::from_utf8(hex_into(bytes, buf)).unwrap_or_default()
}

/// Lowercase hex of an id of at most 16 bytes (an OTLP id) in `buf`, as bytes.
pub fn short_hex<'a>(bytes: &[u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    hex_into(bytes, buf)
}

/// Lowercase hex of the 8 bytes of `x` (most significant first: an id's bytes read
/// big-endian), computed in registers: written where it goes with two stores, where a table's
/// pairs of bytes staged in a buffer would be read back across sixteen small stores (which the
/// processor cannot forward, and waits for).
#[inline(always)]
pub fn hex_u64(x: u64) -> [u8; 16] {
    // Each nibble into a byte of its own, the most significant first.
    let mut v = u128::from(x);
    v = (v & 0xffff_ffff_0000_0000) << 32 | (v & 0xffff_ffff);
    v = (v & 0x0000_0000_ffff_0000_0000_0000_ffff_0000) << 16
        | (v & 0x0000_0000_0000_ffff_0000_0000_0000_ffff);
    v = (v & 0x0000_ff00_0000_ff00_0000_ff00_0000_ff00) << 8
        | (v & 0x0000_00ff_0000_00ff_0000_00ff_0000_00ff);
    v = (v & 0x00f0_00f0_00f0_00f0_00f0_00f0_00f0_00f0) << 4
        | (v & 0x000f_000f_000f_000f_000f_000f_000f_000f);
    // Then '0'..'9' and 'a'..'f': 0x27 more for the nibbles of 10 and above.
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let letters = ((v + ONES * 6) >> 4) & ONES;
    (v + ONES * 0x30 + letters * 0x27).to_be_bytes()
}

/// Lowercase hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        out.push_str(hex_in(chunk, &mut buf));
    }
}

/// Marks an id that the native API received as a free string (`"eval-run-042"`) so that it is
/// stored and shown as that string, not as hex of its bytes. OTLP ids (exactly 16 or 8 bytes,
/// checked by the receivers) do not start with it in practice: it takes these four bytes.
pub const TEXT_ID: &[u8; 4] = b"\0sl:";

/// An id given as text: 32 (trace) or 16 (span) hex digits are the OTLP id they spell, so both
/// APIs find the same span; anything else is kept as text.
pub fn id_from_text(text: &str, binary_len: usize) -> Vec<u8> {
    if text.len() == binary_len * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..binary_len)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
    }
    let mut out = Vec::with_capacity(TEXT_ID.len() + text.len());
    out.extend_from_slice(TEXT_ID);
    out.extend_from_slice(text.as_bytes());
    out
}

/// An id as stored: lowercase hex, or the text a native id was given as.
pub fn push_id(out: &mut String, id: &[u8]) {
    match id_in(id, &mut [0u8; 64]) {
        Some(text) => out.push_str(text),
        None => push_hex(out, id),
    }
}

/// An id as stored ([`push_id`]), in `buf` when it is hex (ids of up to 32 bytes; `None` for
/// longer ones).
pub fn id_in<'a>(id: &'a [u8], buf: &'a mut [u8; 64]) -> Option<&'a str> {
    if let Some(text) = id
        .strip_prefix(TEXT_ID.as_slice())
        .and_then(|t| std::str::from_utf8(t).ok())
    {
        Some(text)
    } else {
        (id.len() <= 32).then(|| hex_in(id, buf))
    }
}

pub fn id_text(id: &[u8]) -> String {
    let mut s = String::with_capacity(id.len() * 2);
    push_id(&mut s, id);
    s
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
    fn hex_of_a_word_is_the_tables_hex() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for k in 0..2000u64 {
            let w = match k {
                0 => 0,
                1 => u64::MAX,
                2 => 0x0123_4567_89ab_cdef,
                _ => {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(k);
                    x
                }
            };
            let mut buf = [0u8; 32];
            assert_eq!(&hex_u64(w), short_hex(&w.to_be_bytes(), &mut buf), "{w:#x}");
        }
    }

    #[test]
    fn hex_matches_the_standard_encoding() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(to_hex(&bytes), expected);
        // Every length around the 32-byte steps, appended after text already there.
        for n in 0..=100 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let mut out = String::from("id=");
            push_hex(&mut out, &bytes);
            let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(out, format!("id={expected}"), "{n} bytes");
            let mut buf = [0u8; 64];
            let stored = id_in(&bytes, &mut buf).map(str::to_owned);
            assert_eq!(stored, (n <= 32).then_some(expected), "{n} bytes");
        }
        let native = id_from_text("eval-run-042", 16);
        assert_eq!(id_in(&native, &mut [0u8; 64]), Some("eval-run-042"));
    }

    #[test]
    fn text_ids_round_trip_and_hex_ids_are_otlp_ids() {
        let id = id_from_text("eval-run-042", 16);
        assert_eq!(id_text(&id), "eval-run-042");
        let otlp = id_from_text("5B8EFFF798038103D269B633813FC60C", 16);
        assert_eq!(otlp.len(), 16);
        assert_eq!(id_text(&otlp), "5b8efff798038103d269b633813fc60c");
        assert_eq!(id_text(&id_from_text("step-01", 8)), "step-01");
        assert_eq!(id_text(&id_from_text("abcd", 8)), "abcd");
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
