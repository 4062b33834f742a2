//! The two hashes that name things in the store: a feature version's [`LineageHash`]
//! (what computes it) and a node's [`ValueKey`] (which value it is), both built with one
//! length-prefixed [`FieldHasher`], so two different field lists can never hash alike.
//!
//! A value key covers the tenant, the feature name, its lineage hash, the entity id, the
//! request inputs the node reads and the keys of its direct dependencies (which cover
//! theirs). The lineage hash covers the version, the flow, the params and the
//! dependencies' lineage hashes, so a new upstream version makes every downstream key new.

use std::fmt;

/// blake3 over fields, each written as its length (u64, little endian) and its bytes,
/// after a domain tag naming what is hashed and its version.
#[derive(Debug)]
pub struct FieldHasher(blake3::Hasher);

impl FieldHasher {
    pub fn new(domain: &str) -> Self {
        let mut h = FieldHasher(blake3::Hasher::new());
        h.field(domain.as_bytes());
        h
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.field(text.as_bytes())
    }

    /// The first 128 bits, as 32 hex characters.
    fn finish(&self) -> String {
        self.0.finalize().to_hex()[..32].to_string()
    }
}

macro_rules! hex_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&FieldHasher> for $name {
            fn from(h: &FieldHasher) -> Self {
                $name(h.finish())
            }
        }
    };
}

hex_name!(
    /// What computes a feature version: 32 hex characters.
    LineageHash
);

hex_name!(
    /// Which value a node is, for one tenant and entity: 32 hex characters. The result
    /// store, claims, waiting jobs and ready notifications are all keyed by it.
    ValueKey
);

impl ValueKey {
    /// A key that came back from the substrate (a job, a notification). Keys are only
    /// ever made by [`FieldHasher`]; this wraps one that travelled.
    pub fn from_wire(key: String) -> Self {
        ValueKey(key)
    }
}

impl LineageHash {
    pub const DOMAIN: &'static str = "fstore.lineage.v1";
}

impl ValueKey {
    pub const DOMAIN: &'static str = "fstore.key.v1";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        let mut a = FieldHasher::new(ValueKey::DOMAIN);
        a.text("ab").text("c");
        let mut b = FieldHasher::new(ValueKey::DOMAIN);
        b.text("a").text("bc");
        assert_ne!(ValueKey::from(&a), ValueKey::from(&b));
    }

    #[test]
    fn domains_separate_kinds() {
        let mut a = FieldHasher::new(ValueKey::DOMAIN);
        a.text("x");
        let mut b = FieldHasher::new(LineageHash::DOMAIN);
        b.text("x");
        assert_ne!(ValueKey::from(&a).as_str(), LineageHash::from(&b).as_str());
    }

    #[test]
    fn keys_are_32_hex_and_stable() {
        let mut h = FieldHasher::new(ValueKey::DOMAIN);
        h.text("tenant").text("feature");
        let k = ValueKey::from(&h);
        assert_eq!(k.as_str().len(), 32);
        assert!(k.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        // The layout is pinned (each field as u64-le length + bytes, after the domain):
        // a change here changes every stored key, which must be deliberate.
        let mut raw = blake3::Hasher::new();
        for f in [ValueKey::DOMAIN, "tenant", "feature"] {
            raw.update(&(f.len() as u64).to_le_bytes());
            raw.update(f.as_bytes());
        }
        assert_eq!(k.as_str(), &raw.finalize().to_hex()[..32]);
    }
}
