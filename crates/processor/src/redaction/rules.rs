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
