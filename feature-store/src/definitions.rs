//! The registration file: TOML with one `[[feature]]` table per feature, registered in
//! file order (write dependencies first).
//!
//! ```toml
//! [[feature]]
//! name = "doc.words"
//! entity_type = "doc"
//! flow = "text.stats@1"
//! ttl = "10m"
//! owner = "search"
//! description = "number of words"
//! params = { stat = "words" }
//! inputs = { text = { request = "text" } }
//!
//! [[feature]]
//! name = "doc.score"
//! # ...
//! serving = "snapshot"            # answered from the published generation, in memory
//! gate = { max_null_rate = 0.01, max_psi = 0.2 }   # what a staged generation must pass
//!
//! [[schedule]]                    # a backfill that repeats (`fstore register` starts it)
//! name = "nightly-scores"
//! features = ["doc.score"]
//! entities = "docs.csv"           # CSV or Parquet, relative to this file
//! every = "24h"
//! stage = true                    # through the gate, published if it passes
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use fstore_proto::api;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    feature: Vec<Feature>,
    #[serde(default)]
    schedule: Vec<ScheduleSpec>,
}

/// A `[[schedule]]`: a backfill that repeats, over the entities of a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    pub features: Vec<String>,
    /// A CSV or Parquet file of entities, relative to the registration file.
    pub entities: std::path::PathBuf,
    #[serde(default = "default_id_column")]
    pub id_column: String,
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    #[serde(default)]
    pub stage: bool,
    #[serde(default, with = "humantime_serde")]
    pub max_staleness: Option<Duration>,
}

fn default_id_column() -> String {
    "entity_id".to_string()
}

/// The `[[schedule]]` tables of a registration file, in file order.
pub fn schedules(text: &str) -> Result<Vec<ScheduleSpec>, Error> {
    Ok(toml::from_str::<File>(text)?.schedule)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Feature {
    name: String,
    entity_type: String,
    flow: String,
    #[serde(with = "humantime_serde")]
    ttl: Duration,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    inputs: BTreeMap<String, Input>,
    #[serde(default)]
    serving: Serving,
    #[serde(default)]
    gate: Option<Gate>,
    /// For a relation feature: the entity type its ids are of.
    #[serde(default)]
    relates_to: String,
    /// Tenants that may read it (as `<owner>/<name>`), not change it.
    #[serde(default)]
    shared_with: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Serving {
    #[default]
    Online,
    Snapshot,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gate {
    max_row_change: Option<f64>,
    max_failure_rate: Option<f64>,
    max_null_rate: Option<f64>,
    max_psi: Option<f64>,
    max_ks: Option<f64>,
    max_norm_change: Option<f64>,
    min_cosine: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    feature: Option<String>,
    request: Option<String>,
    /// A relation feature, or the path of them, to related entities.
    via: Option<Via>,
    aggregate: Option<String>,
    #[serde(default)]
    truncate: bool,
}

/// `via = "user.history"` or `via = ["model.pipeline_run", "pipeline_run.cells"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Via {
    One(String),
    Path(Vec<String>),
}

/// Why a registration file was refused before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not TOML of the file's shape: a missing field, an unknown key, a bad duration.
    #[error("registration file: {0}")]
    Syntax(#[from] toml::de::Error),
    /// An input bound to both or neither of a feature and a request input.
    #[error(
        "feature `{feature}`, input `{input}`: give exactly one of `feature`, `request` or `via` (with `aggregate`, and `feature` unless it is `ids`)"
    )]
    Source { feature: String, input: String },
}

/// The definitions of a registration file, in file order.
pub fn parse(text: &str) -> Result<Vec<api::FeatureDefinition>, Error> {
    let file: File = toml::from_str(text)?;
    file.feature
        .into_iter()
        .map(|f| {
            let inputs = f
                .inputs
                .into_iter()
                .map(|(name, i)| {
                    let source = match (i.feature, i.request, i.via) {
                        (feature, None, Some(via)) => {
                            api::input_binding::Source::Related(api::Related {
                                via: match via {
                                    Via::One(v) => vec![v],
                                    Via::Path(p) => p,
                                },
                                feature: feature.unwrap_or_default(),
                                aggregate: i.aggregate.unwrap_or_default(),
                                truncate: i.truncate,
                            })
                        }
                        (Some(feat), None, None) => api::input_binding::Source::Feature(feat),
                        (None, Some(req), None) => api::input_binding::Source::Request(req),
                        _ => {
                            return Err(Error::Source {
                                feature: f.name.clone(),
                                input: name,
                            });
                        }
                    };
                    Ok((
                        name,
                        api::InputBinding {
                            source: Some(source),
                        },
                    ))
                })
                .collect::<Result<_, Error>>()?;
            let params = f
                .params
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect();
            Ok(api::FeatureDefinition {
                name: f.name,
                version: 0,
                entity_type: f.entity_type,
                flow: f.flow,
                params,
                inputs,
                ttl_ms: f.ttl.as_millis() as u64,
                owner: f.owner,
                description: f.description,
                serving: match f.serving {
                    Serving::Online => api::Serving::Unspecified,
                    Serving::Snapshot => api::Serving::Snapshot,
                } as i32,
                relates_to: f.relates_to,
                // The registry's: the caller's tenant.
                tenant: String::new(),
                shared_with: f.shared_with,
                gate: f.gate.map(|g| api::GateThresholds {
                    max_row_change: g.max_row_change,
                    max_failure_rate: g.max_failure_rate,
                    max_null_rate: g.max_null_rate,
                    max_psi: g.max_psi,
                    max_ks: g.max_ks,
                    max_norm_change: g.max_norm_change,
                    min_cosine: g.min_cosine,
                }),
            })
        })
        .collect()
}

/// The demo features, registered by `fstore demo` and documented in the README.
pub const DEMO: &str = include_str!("../examples/demo.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_file_parses() {
        let defs = parse(DEMO).expect("demo parses");
        assert!(defs.len() >= 4);
        assert!(defs.iter().all(|d| d.ttl_ms > 0));
    }

    #[test]
    fn serving_and_gate_are_read() {
        let defs = parse(
            "[[feature]]\nname='a'\nentity_type='d'\nflow='f@1'\nttl='1s'\nserving='snapshot'\ngate={max_psi=0.2}\nshared_with=['globex']\n",
        )
        .expect("parses");
        assert_eq!(defs[0].shared_with, ["globex"]);
        assert_eq!(defs[0].serving(), api::Serving::Snapshot);
        assert_eq!(defs[0].gate.as_ref().and_then(|g| g.max_psi), Some(0.2));
        let e = parse(
            "[[feature]]\nname='a'\nentity_type='d'\nflow='f@1'\nttl='1s'\nserving='memory'\n",
        );
        assert!(e.is_err_and(|e| e.to_string().contains("snapshot")));
    }

    #[test]
    fn schedules_are_read_and_a_bad_every_is_refused() {
        let text =
            "[[schedule]]\nname='n'\nfeatures=['a']\nentities='e.csv'\nevery='24h'\nstage=true\n";
        let s = schedules(text).expect("parses");
        assert_eq!(s[0].every, Duration::from_secs(86_400));
        assert_eq!((s[0].id_column.as_str(), s[0].stage), ("entity_id", true));
        assert!(parse(text).expect("features parse").is_empty());
        let bad =
            schedules("[[schedule]]\nname='n'\nfeatures=['a']\nentities='e.csv'\nevery='daily'\n");
        assert!(
            bad.is_err_and(|e| e.to_string().contains("every")),
            "names the key"
        );
    }

    #[test]
    fn both_sources_refused() {
        let e = parse(
            "[[feature]]\nname='a'\nentity_type='d'\nflow='f@1'\nttl='1s'\ninputs={x={feature='b',request='c'}}\n",
        );
        assert!(e.is_err_and(|e| e.to_string().contains("exactly one")));
    }
}
