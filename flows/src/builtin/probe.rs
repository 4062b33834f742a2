//! `test.probe`: a flow for tests and demos, with a configurable delay and failure mode,
//! that counts how often it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{SpecBuilder, param};
use crate::spec::InputSpec;
use crate::{Error, Flow, FlowInput, FlowSpec, Value, ValueType};

/// Outputs `value + x` (x optional) after `delay_ms`, or fails as `fail` says.
#[derive(Debug, Clone)]
pub struct Probe {
    spec: Arc<FlowSpec>,
    computed: Arc<AtomicU64>,
}

impl Probe {
    pub fn new() -> Self {
        let spec = SpecBuilder::new(
            "test.probe",
            1,
            ValueType::F64,
            "value + x after a delay, or a configured failure; counts its computes",
        )
        .input(InputSpec {
            name: "x".to_string(),
            value_type: ValueType::F64,
            optional: true,
        })
        .param(param(
            "value",
            Some("1"),
            "the output when x is absent, added to x otherwise",
        ))
        .param(param("delay_ms", Some("0"), "how long each batch takes"))
        .param(param(
            "fail",
            Some("none"),
            "none, transient (fails the first fail_attempts tries) or permanent",
        ))
        .param(param(
            "fail_attempts",
            Some("1000000"),
            "tries that fail when fail = transient",
        ))
        .param(param(
            "fail_until_ms",
            Some("0"),
            "with fail = transient: fail only until this Unix time in ms (0: no limit)",
        ))
        .param(param(
            "fail_entities",
            Some(""),
            "comma-separated entity ids that fail; empty: every entity",
        ))
        .build();
        Probe {
            spec: Arc::new(spec),
            computed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many items this probe (and its clones) has computed, failures included.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::SeqCst)
    }

    fn one(item: &FlowInput) -> Result<Value, Error> {
        let fail = item.params.str_or("fail", "none");
        let targets = item.params.str_or("fail_entities", "");
        let targeted = targets.is_empty() || targets.split(',').any(|e| e.trim() == item.entity_id);
        if targeted {
            match fail {
                "none" => {}
                "transient" => {
                    let attempts = item.params.u64_or("fail_attempts", 1_000_000)?;
                    let until = item.params.u64_or("fail_until_ms", 0)?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    let in_window = until == 0 || now < until;
                    if u64::from(item.attempt) <= attempts && in_window {
                        return Err(Error::Transient(format!(
                            "probe fails try {} of entity {} on purpose",
                            item.attempt, item.entity_id
                        )));
                    }
                }
                "permanent" => {
                    return Err(Error::Permanent(format!(
                        "probe refuses entity {} on purpose",
                        item.entity_id
                    )));
                }
                other => {
                    return Err(Error::Permanent(format!(
                        "param `fail` = `{other}` is not one of none, transient, permanent"
                    )));
                }
            }
        }
        let value = item.params.f64_or("value", 1.0)?;
        let x = match item.values.get("x") {
            Some(v) => v.as_f64()?,
            None => 0.0,
        };
        Ok(Value::F64(value + x))
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

impl Flow for Probe {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn check_params(&self, params: &crate::Params) -> Result<(), Error> {
        self.spec.check_params(params)?;
        params.f64_or("value", 1.0)?;
        params.u64_or("delay_ms", 0)?;
        params.u64_or("fail_attempts", 0)?;
        params.u64_or("fail_until_ms", 0)?;
        match params.str_or("fail", "none") {
            "none" | "transient" | "permanent" => Ok(()),
            other => Err(Error::Permanent(format!(
                "param `fail` = `{other}` is not one of none, transient, permanent"
            ))),
        }
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, Error>> {
        let delay = batch
            .iter()
            .filter_map(|i| i.params.u64_or("delay_ms", 0).ok())
            .max()
            .unwrap_or(0);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        self.computed
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        batch.iter().map(Probe::one).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::testing::item;

    #[test]
    fn counts_and_fails_as_configured() {
        let p = Probe::new();
        let out = p.run(&[
            item(&[("x", Value::F64(2.0))], &[("value", "3")]),
            item(&[], &[("fail", "permanent")]),
            item(&[], &[("fail", "transient"), ("fail_attempts", "1")]),
            item(&[], &[("fail", "permanent"), ("fail_entities", "other")]),
        ]);
        assert_eq!(p.computed(), 4);
        assert_eq!(
            out[0].as_ref().ok().and_then(|v| v.as_f64().ok()),
            Some(5.0)
        );
        assert!(matches!(out[1], Err(Error::Permanent(_))));
        assert!(matches!(out[2], Err(Error::Transient(_))));
        assert_eq!(
            out[3].as_ref().ok().and_then(|v| v.as_f64().ok()),
            Some(1.0)
        );
        let mut retry = item(&[], &[("fail", "transient"), ("fail_attempts", "1")]);
        retry.attempt = 2;
        assert!(p.run(&[retry])[0].is_ok());
    }
}
