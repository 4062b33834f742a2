//! A feature's params: strings by name, read with typed accessors that fall back to the
//! flow's declared defaults.

use std::collections::BTreeMap;

use crate::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Params(map)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn f64_or(&self, name: &str, default: f64) -> Result<f64, Error> {
        self.parse_or(name, default, "a number")
    }

    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64, Error> {
        self.parse_or(name, default, "a whole number")
    }

    pub fn str_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    fn parse_or<T: std::str::FromStr>(
        &self,
        name: &str,
        default: T,
        what: &str,
    ) -> Result<T, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|_| Error::Permanent(format!("param `{name}` = `{raw}` is not {what}"))),
        }
    }
}

impl FromIterator<(String, String)> for Params {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Params(iter.into_iter().collect())
    }
}
