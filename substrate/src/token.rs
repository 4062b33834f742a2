//! Names that come from users (tenants, feature and flow names, entity ids) never go raw
//! into a NATS subject or KV key: `*`, `>`, `.`, spaces and unicode would change routing.
//! [`encode`] keeps `A-Z a-z 0-9 -` and writes every other byte as `_XX` (hex), which is
//! injective, readable for plain names and decodes back exactly.

/// A subject- and key-safe token for any string; never empty.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    if s.is_empty() {
        return "_".to_string();
    }
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push('_');
            out.push(hex(b >> 4));
            out.push(hex(b & 0xf));
        }
    }
    out
}

/// The string a token came from, or None if it is not a token.
pub fn decode(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'_' {
            let hi = unhex(*bytes.get(i + 1)?)?;
            let lo = unhex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0xf)])
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_stay_readable() {
        assert_eq!(encode("acme-1"), "acme-1");
        assert_eq!(encode("text.stats@1"), "text_2Estats_401");
        assert_eq!(encode(""), "_");
        assert_eq!(decode("text_2Estats_401").as_deref(), Some("text.stats@1"));
        assert_eq!(decode("a.b"), None);
    }

    fn safe(token: &str) -> bool {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    proptest! {
        #[test]
        fn any_string_round_trips_and_is_never_a_wildcard(s in "\\PC{0,64}|[*>. \\t]{1,8}|.{1024}") {
            let t = encode(&s);
            prop_assert!(safe(&t), "{t:?} is not subject-safe");
            prop_assert!(!t.contains('.') && !t.contains('*') && !t.contains('>') && !t.contains(' '));
            prop_assert_eq!(decode(&t), Some(s));
        }

        #[test]
        fn distinct_strings_get_distinct_tokens(a in "\\PC{0,32}", b in "\\PC{0,32}") {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }
    }
}
