//! Compiled redaction rules, and the built-in rule set.

use regex::Regex;

/// Compile a user pattern: keys (and allowed values) match whole and ignore case.
pub fn compile(pattern: &str, anchored: bool) -> Result<Regex, regex::Error> {
    if anchored {
        Regex::new(&format!("(?i)^(?:{pattern})$"))
    } else {
        Regex::new(pattern)
    }
}

/// Credential-like keys: the last segment of the key (after the last `.`), ignoring case, is or
/// ends in one of these words. `input_tokens` or `token_count` are not secrets; `access_token`,
/// `x-api-key`, `http.request.header.authorization` are.
pub const BUILTIN_KEY: &str = r"(?i)^(?:.*[._-])?(?:password|passwd|pwd|secret|client[_-]?secret|token|api[_-]?key|apikey|authorization|proxy-authorization|cookie|set-cookie|private[_-]?key)$";

/// Secret-looking values, wherever they appear in a string. ASCII word boundaries
/// (`(?-u:\b)`) keep the patterns on the regex crate's fast DFA engines; a Unicode `\b` would
/// push the whole set onto the slow one.
pub const BUILTIN_VALUES: &[(&str, &str)] = &[
    (
        "authorization",
        r"(?i)(?-u:\b)(?:bearer|basic)[ \t]+[A-Za-z0-9._~+/=-]{8,}",
    ),
    (
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}",
    ),
    (
        "aws_access_key",
        r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}(?-u:\b)",
    ),
    (
        "pem_private_key",
        r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
    ),
];

/// Card-number candidates; a match is a secret only if its digits pass the Luhn check.
pub const CARD_CANDIDATE: &str = r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)";

/// The first four letters of the AWS access key ids of [`BUILTIN_VALUES`].
const AWS_PREFIXES: [&[u8]; 8] = [
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"ANVA", b"AIPA",
];

/// The fewest bytes any built-in value pattern matches: a card number's 13 digits.
const BUILTIN_MIN_LEN: usize = 13;

/// A quick look for what every built-in value pattern ([`BUILTIN_VALUES`], [`CARD_CANDIDATE`])
/// needs: `false` only when none of them can match anywhere in `s`. A run of 13 digits (single
/// spaces or dashes between them), `bearer` or `basic` in any case, `eyJ`, an AWS key prefix, or
/// `-----BEGIN `. Text that is not ASCII is left to the regexes, whose case-insensitive match
/// follows Unicode (`ſ` is an `s`). Every attribute value and span name passes here, and most
/// hold none of these: at ~0.5 ns a byte for short values, ~0.13 for long ones (one 5 KB value
/// of random letters: 0.6 µs), it costs a small part of the regex search it spares.
pub fn may_hold_builtin(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < BUILTIN_MIN_LEN {
        return false;
    }
    // Most values are short: one pass over the bytes, eight at a time, beats setting up four
    // searches.
    if b.len() <= 64 {
        let mut digits = 0;
        for (at, chunk) in b.chunks(8).enumerate() {
            let w = word(chunk);
            if w & HIGH != 0 {
                return true;
            }
            // The letters a fixed part starts with (and, rarely, a byte after one of them).
            let mut maybe = bytes_equal(w, b'b')
                | bytes_equal(w, b'B')
                | bytes_equal(w, b'A')
                | bytes_equal(w, b'J');
            while maybe != 0 {
                let i = at * 8 + (maybe.trailing_zeros() / 8) as usize;
                if i < b.len() && matches!(b[i], b'b' | b'B' | b'A' | b'J') && starts_builtin(b, i)
                {
                    return true;
                }
                maybe &= maybe - 1;
            }
            // ASCII bytes from `0` (0x30), less those from `:` (0x3A): no byte carries into
            // the next, as every byte is below 0x80.
            let from_0 = w.wrapping_add(ONES * (0x80 - 0x30)) & HIGH;
            let from_colon = w.wrapping_add(ONES * (0x80 - 0x3A)) & HIGH;
            digits += (from_0 & !from_colon).count_ones();
        }
        return digits >= 13 && has_digit_run(b, 13);
    }
    long_may_hold_builtin(b)
}

/// [`may_hold_builtin`] for values longer than 64 bytes (large attribute values, SQL, bodies):
/// one pass, 64 bytes a step, that marks the two-byte starts of the fixed parts (`be`/`ba` in
/// any case, `A` and a capital from `G` to `S`, `yJ`) and counts digits; only marked positions
/// are looked at one by one, and a digit run only where 64 bytes in a row, from a multiple of 32
/// on, hold 13 digits (a run of 13 with single separators spans at most 25 bytes, so it lies
/// in two neighbouring 32-byte halves).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn long_may_hold_builtin(b: &[u8]) -> bool {
    use std::arch::x86_64::*;
    const STEP: usize = 64;
    let n = b.len();
    let mut at = 0;
    let mut digits_before = 0;
    // SAFETY: SSE2 is part of x86-64, so its intrinsics can always run; they read nothing but
    // their arguments (each 16 bytes come from a checked slice as two words: one load once
    // compiled).
    unsafe {
        let load = |i: usize| {
            let w = |j: usize| i64::from_le_bytes(b[j..j + 8].try_into().expect("8 bytes"));
            _mm_set_epi64x(w(i + 8), w(i))
        };
        let ones = |c: u8| _mm_set1_epi8(c as i8);
        let (x20, lb, le, la) = (ones(0x20), ones(b'b'), ones(b'e'), ones(b'a'));
        let (ua, below_g, above_s) = (ones(b'A'), ones(b'G' - 1), ones(b'S' + 1));
        let (ly, uj) = (ones(b'y'), ones(b'J'));
        let (below_0, above_9) = (ones(b'0' - 1), ones(b'9' + 1));
        let zero = _mm_setzero_si128();
        while at + STEP < n {
            let mut marks = 0u64;
            let mut high = zero;
            let mut digits = 0u64;
            for k in 0..STEP / 16 {
                let (v0, v1) = (load(at + 16 * k), load(at + 16 * k + 1));
                let (l0, l1) = (_mm_or_si128(v0, x20), _mm_or_si128(v1, x20));
                let bearer_basic = _mm_and_si128(
                    _mm_cmpeq_epi8(l0, lb),
                    _mm_or_si128(_mm_cmpeq_epi8(l1, le), _mm_cmpeq_epi8(l1, la)),
                );
                let aws = _mm_and_si128(
                    _mm_cmpeq_epi8(v0, ua),
                    _mm_and_si128(_mm_cmpgt_epi8(v1, below_g), _mm_cmplt_epi8(v1, above_s)),
                );
                let jwt = _mm_and_si128(_mm_cmpeq_epi8(v0, ly), _mm_cmpeq_epi8(v1, uj));
                let mark = _mm_or_si128(bearer_basic, _mm_or_si128(aws, jwt));
                marks |= u64::from(_mm_movemask_epi8(mark) as u16) << (16 * k);
                high = _mm_or_si128(high, v0);
                let digit = _mm_and_si128(_mm_cmpgt_epi8(v0, below_0), _mm_cmplt_epi8(v0, above_9));
                digits |= u64::from(_mm_movemask_epi8(digit) as u16) << (16 * k);
            }
            if _mm_movemask_epi8(high) != 0 {
                return true;
            }
            while marks != 0 {
                let i = at + marks.trailing_zeros() as usize;
                // A `yJ` mark is the `J` of `eyJ`, one byte on.
                if starts_builtin(b, if b[i] == b'y' { i + 1 } else { i }) {
                    return true;
                }
                marks &= marks - 1;
            }
            let (first, second) = ((digits as u32).count_ones(), (digits >> 32).count_ones());
            if (digits_before + first >= 13 || first + second >= 13)
                && has_digit_run(&b[at.saturating_sub(32)..at + STEP], 13)
            {
                return true;
            }
            digits_before = second;
            at += STEP;
        }
    }
    // The last bytes (1 to 64), one at a time, and a run that may start in the step before.
    let rest = &b[at..];
    if !rest.is_ascii() {
        return true;
    }
    let here = rest.iter().filter(|c| c.is_ascii_digit()).count() as u32;
    if digits_before + here >= 13 && has_digit_run(&b[at.saturating_sub(32)..], 13) {
        return true;
    }
    (at..n).any(|i| matches!(b[i], b'b' | b'B' | b'A' | b'J') && starts_builtin(b, i))
}

#[cfg(not(target_arch = "x86_64"))]
fn long_may_hold_builtin(b: &[u8]) -> bool {
    if !b.is_ascii() {
        return true;
    }
    if b.iter().filter(|c| c.is_ascii_digit()).count() >= 13 && has_digit_run(b, 13) {
        return true;
    }
    memchr::memchr3_iter(b'b', b'B', b'A', b).any(|i| starts_builtin(b, i))
        || memchr::memchr_iter(b'J', b).any(|i| starts_builtin(b, i))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Up to eight bytes as one word, zeros after them (a zero byte is no letter and no digit).
#[inline]
fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..chunk.len()].copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// The high bit of each byte of `w` (all ASCII) equal to `c`; a byte just after such a byte
/// may be marked too, so callers look at the byte itself.
#[inline]
fn bytes_equal(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * u64::from(c));
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Whether a built-in value pattern's fixed part is at `b[i]` (a `b`, `B`, `A` or `J`): an
/// AWS key prefix, `bearer` or `basic` in any case, `-----BEGIN `, or the `J` of `eyJ`.
fn starts_builtin(b: &[u8], i: usize) -> bool {
    let t = &b[i..];
    match t[0] {
        b'A' => AWS_PREFIXES.iter().any(|p| t.starts_with(p)),
        b'J' => i >= 2 && &b[i - 2..i] == b"ey",
        _ => {
            starts_with_ignore_case(t, b"bearer")
                || starts_with_ignore_case(t, b"basic")
                || (t.starts_with(b"BEGIN ") && i >= 5 && &b[i - 5..i] == b"-----")
        }
    }
}

/// Whether `b` has `n` ASCII digits in a row, a single space or dash allowed between two of them
/// (what [`CARD_CANDIDATE`] matches).
fn has_digit_run(b: &[u8], n: usize) -> bool {
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= n {
                return true;
            }
        } else if !((c == b' ' || c == b'-')
            && run > 0
            && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            run = 0;
        }
    }
    false
}

fn starts_with_ignore_case(t: &[u8], word: &[u8]) -> bool {
    t.len() >= word.len() && t[..word.len()].eq_ignore_ascii_case(word)
}

pub fn luhn(digits: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_builtin() -> regex::RegexSet {
        let mut patterns: Vec<&str> = BUILTIN_VALUES.iter().map(|(_, p)| *p).collect();
        patterns.push(CARD_CANDIDATE);
        regex::RegexSet::new(patterns).expect("valid")
    }

    /// Secrets, near misses and noise glued together, so the property below meets real
    /// matches and not only text that trivially matches nothing.
    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{14,18}",
            "[0-9]{3,5}[ -]?[0-9]{3,5}[ -]?[0-9]{3,5}[ -]?[0-9]{1,5}",
            "([bB][eE][aA][rR][eE][rR]|[bB][aA][sS][iI][cC]|baſic)[ \t]{1,2}[A-Za-z0-9._~+/=-]{6,12}",
            "eyJ[A-Za-z0-9_-]{3,6}\\.[A-Za-z0-9_-]{3,6}\\.[A-Za-z0-9_-]{3,6}",
            "-----BEGIN [A-Z ]{0,4}PRIVATE KEY-----[a-z\n]{0,8}-----END [A-Z ]{0,4}PRIVATE KEY-----",
            "[ -~]{1,12}",
            "[0-9]{1,4}",
            "\\PC{1,3}",
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
    }

    /// The quick look a byte at a time, as it was: the word-at-a-time one must agree with it.
    fn quick_look_bytewise(s: &str) -> bool {
        let b = s.as_bytes();
        if b.len() < BUILTIN_MIN_LEN {
            return false;
        }
        let mut digits = 0;
        for (i, &c) in b.iter().enumerate() {
            match c {
                0x80.. => return true,
                b'0'..=b'9' => digits += 1,
                b'b' | b'B' | b'A' | b'J' if starts_builtin(b, i) => return true,
                _ => {}
            }
        }
        digits >= 13 && has_digit_run(b, 13)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn eight_bytes_at_a_time_agree_with_one(
            s in prop_oneof![text(), "[ -~]{0,70}", "[0-9 :/bBAJ-]{0,70}", "\\PC{0,70}"],
        ) {
            prop_assert_eq!(may_hold_builtin(&s), quick_look_bytewise(&s), "{:?}", s);
        }

        /// Long values take the 64-bytes-a-step path: secrets and digit runs at every offset,
        /// across the steps' edges and in the last bytes.
        #[test]
        fn long_values_agree_with_one_byte_at_a_time(
            pieces in proptest::collection::vec(
                prop_oneof![text(), "[a-z]{1,80}", "[ -~]{1,80}", "[0-9 -]{1,30}", "[bByJAK]{1,8}"],
                1..12,
            ),
            filler in "[a-zA-Z]{65,200}",
        ) {
            let s = format!("{filler}{}", pieces.concat());
            prop_assert_eq!(may_hold_builtin(&s), quick_look_bytewise(&s), "{:?}", s);
        }

        #[test]
        fn the_quick_look_misses_no_builtin_match(s in text()) {
            if any_builtin().is_match(&s) {
                prop_assert!(may_hold_builtin(&s), "missed {s:?}");
            }
        }
    }

    #[test]
    fn long_values_are_looked_at_everywhere() {
        let letters: String = (0..400)
            .map(|i| char::from(b'c' + (i * 7 % 23) as u8))
            .collect();
        assert!(!may_hold_builtin(&letters));
        for at in 0..300 {
            let with = |part: &str| format!("{}{part}{}", &letters[..at], &letters[at..]);
            for secret in [
                "Bearer abcdefgh12345",
                "basic abcdefgh12345",
                "eyJhbGciOi",
                "AKIAABCDEFGHIJKLMNOP",
                "-----BEGIN ",
                "4111 1111 1111 1",
                "4111-1111-111111",
                "é",
            ] {
                assert!(may_hold_builtin(&with(secret)), "{secret} at {at}");
            }
            for near in [
                "bxarer",
                "Bx",
                "yj",
                "eJ",
                "AKxA",
                "4111 1111 1111",
                "12  34567890123",
            ] {
                assert_eq!(
                    may_hold_builtin(&with(near)),
                    quick_look_bytewise(&with(near)),
                    "{near} at {at}"
                );
            }
        }
    }

    #[test]
    fn the_quick_look_passes_plain_text_and_stops_secrets() {
        for plain in [
            "op-3",
            "vvvvvvvvvvvvvvvv",
            "GET /api/v1/users/12345?x=1 HTTP/1.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
            "SELECT * FROM orders WHERE customer_id = $1 AND status = 'open'",
            "2026-11-22T14:45:31.123456Z",
        ] {
            assert!(!may_hold_builtin(plain), "{plain}");
        }
        for secret in [
            "Authorization: Bearer abcdefgh12345",
            "token=eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
            "key AKIAABCDEFGHIJKLMNOP here",
            "card 4111 1111 1111 1111",
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
        ] {
            assert!(may_hold_builtin(secret), "{secret}");
            assert!(any_builtin().is_match(secret), "{secret}");
        }
    }

    #[test]
    fn builtin_keys() {
        let re = Regex::new(BUILTIN_KEY).expect("valid");
        for k in [
            "password",
            "db.password",
            "access_token",
            "x-api-key",
            "API_KEY",
            "http.request.header.authorization",
            "set-cookie",
            "client_secret",
            "private_key",
            "user.Token",
        ] {
            assert!(re.is_match(k), "{k} is a credential key");
        }
        for k in [
            "gen_ai.usage.input_tokens",
            "llm.token_count.prompt",
            "tokens",
            "author",
            "secretary.name",
            "http.route",
        ] {
            assert!(!re.is_match(k), "{k} is not");
        }
    }

    #[test]
    fn luhn_check() {
        let digits = |s: &str| {
            s.bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| b - b'0')
                .collect::<Vec<_>>()
        };
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(luhn(&digits("5500-0000-0000-0004")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(!luhn(&digits("1234")));
    }
}
