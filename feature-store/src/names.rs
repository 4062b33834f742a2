//! Names users send: feature references (`name` or `name@version`), entity types,
//! request-input names and tenants, validated with messages that say the rule.

use std::fmt;

use crate::{Error, Result};

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_ENTITY_ID_LEN: usize = 1024;
pub const MAX_TENANT_LEN: usize = 64;

/// A feature as a caller names it: the latest version, or a pinned one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeatureRef {
    pub name: String,
    pub version: Option<u32>,
}

impl FeatureRef {
    pub fn parse(s: &str) -> Result<Self> {
        let (name, version) = match s.split_once('@') {
            None => (s, None),
            Some((name, v)) => {
                let v = v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "feature `{s}`: version `{v}` must be a whole number from 1"
                    ))
                })?;
                (name, Some(v))
            }
        };
        check_name("feature", name)?;
        Ok(FeatureRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Feature names, entity types and input names: 1 to 128 of `a-z 0-9 _ . -`, starting
/// with a letter.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name `{}` is malformed: use 1 to {MAX_NAME_LEN} of a-z, 0-9, '_', '.', '-', starting with a letter",
            truncate(name, 80)
        )))
    }
}

/// Entity ids are opaque: any text of 1 to 1024 bytes.
pub fn check_entity_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ENTITY_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "entity id `{}` must be 1 to {MAX_ENTITY_ID_LEN} bytes",
            truncate(id, 80)
        )));
    }
    Ok(())
}

/// Tenants: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_tenant(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TENANT_LEN
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "tenant `{}` is malformed: use 1 to {MAX_TENANT_LEN} of A-Z, a-z, 0-9, '_', '-'",
            truncate(t, 80)
        )))
    }
}

/// At most `max` characters of `s`, for messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        assert_eq!(
            FeatureRef::parse("doc.len@3").ok(),
            Some(FeatureRef {
                name: "doc.len".into(),
                version: Some(3)
            })
        );
        assert_eq!(
            FeatureRef::parse("doc.len").ok().and_then(|r| r.version),
            None
        );
        for bad in [
            "", "Doc", "doc len", "doc@0", "doc@x", "1doc", "doc*", "doc>",
        ] {
            assert!(FeatureRef::parse(bad).is_err(), "{bad} must be refused");
        }
        assert!(FeatureRef::parse(&"a".repeat(129)).is_err());
    }

    proptest::proptest! {
        /// Any text parses or is refused, never panics; what parses prints as a
        /// canonical reference (`a@01` as `a@1`) that parses back to itself, and names
        /// only `a-z 0-9 _ . -` (no NATS wildcard, no space).
        #[test]
        fn any_reference_parses_or_is_refused(s in "\\PC{0,40}|[a-z][a-z0-9_.-]{0,20}@[0-9]{1,12}") {
            if let Ok(r) = FeatureRef::parse(&s) {
                proptest::prop_assert_eq!(FeatureRef::parse(&r.to_string()).ok(), Some(r.clone()));
                proptest::prop_assert!(r.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c)));
                proptest::prop_assert!(r.version != Some(0));
            }
        }

        /// The registration file parser refuses what is not a registration file with an
        /// error, whatever the text.
        #[test]
        fn any_registration_text_parses_or_is_refused(s in "\\PC{0,200}|\\[\\[feature\\]\\][\\PC\n]{0,200}") {
            let _ = crate::definitions::parse(&s);
            let _ = crate::definitions::schedules(&s);
        }
    }

    #[test]
    fn tenants_and_entities() {
        assert!(check_tenant("acme-1").is_ok());
        assert!(check_tenant("a.b").is_err());
        assert!(check_entity_id("title:42 ✓ *>").is_ok());
        assert!(check_entity_id("").is_err());
        assert!(check_entity_id(&"x".repeat(1025)).is_err());
    }
}
