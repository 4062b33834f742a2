//! What a flow declares about itself: identity, inputs, output, params.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Params, ValueType};

/// `name@version` of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlowId {
    pub name: String,
    pub version: u32,
}

impl FlowId {
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        FlowId {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl FromStr for FlowId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = s
            .split_once('@')
            .ok_or_else(|| format!("flow `{s}` must be written name@version, e.g. num.affine@1"))?;
        let version = version
            .parse::<u32>()
            .map_err(|_| format!("flow `{s}`: version `{version}` is not a whole number"))?;
        if name.is_empty() {
            return Err(format!("flow `{s}` has an empty name"));
        }
        Ok(FlowId::new(name, version))
    }
}

/// A declared flow input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub name: String,
    pub value_type: ValueType,
    /// An optional input may be left unbound by a feature.
    pub optional: bool,
}

/// A declared param with its default (None: required) and meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub default: Option<String>,
    pub doc: String,
}

/// Everything the feature store needs to know about a flow without running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowSpec {
    pub id: FlowId,
    pub description: String,
    pub inputs: Vec<InputSpec>,
    pub output: ValueType,
    pub params: Vec<ParamSpec>,
    /// Entity types the flow accepts; empty means any.
    pub entity_types: Vec<String>,
    /// Whether one call of [`crate::Flow::run`] with many items is cheaper than many calls.
    pub batchable: bool,
}

impl FlowSpec {
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// Refuses unknown params and missing required ones.
    pub fn check_params(&self, params: &Params) -> Result<(), Error> {
        for name in params.names() {
            if !self.params.iter().any(|p| p.name == name) {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::Permanent(format!(
                    "flow {} has no param `{name}` (known: {})",
                    self.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        for p in &self.params {
            if p.default.is_none() && params.get(&p.name).is_none() {
                return Err(Error::Permanent(format!(
                    "flow {} needs param `{}`: {}",
                    self.id, p.name, p.doc
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_id_parses_and_prints() {
        let id: FlowId = "num.affine@2".parse().expect("valid id");
        assert_eq!(id, FlowId::new("num.affine", 2));
        assert_eq!(id.to_string(), "num.affine@2");
        assert!("num.affine".parse::<FlowId>().is_err());
        assert!("num.affine@x".parse::<FlowId>().is_err());
        assert!("@1".parse::<FlowId>().is_err());
    }
}
