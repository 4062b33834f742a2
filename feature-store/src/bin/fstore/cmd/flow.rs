//! `fstore flow`: the flows this binary carries, listed or run locally, without a server
//! or queue.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Subcommand;
use fstore_flows::{Catalog, FlowId, FlowSpec};

use crate::error::usage;
use crate::output::{print_json, table, value_json, value_text};

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Lists the flows this binary carries.
    Ls,
    /// Runs one flow on given inputs and prints the output (or the flow's error).
    Run {
        /// name@version, or name for the latest version.
        flow: String,
        /// Inputs: name=text or name:TYPE=value (f64, i64, bool, string, tensor, file).
        #[arg(short, long = "input")]
        inputs: Vec<String>,
        /// Params: name=value.
        #[arg(short, long = "param")]
        params: Vec<String>,
        #[arg(long, default_value = "local")]
        entity: String,
    },
}

pub fn run(verb: Verb, json: bool) -> anyhow::Result<()> {
    let catalog = Catalog::builtins();
    match verb {
        Verb::Ls => {
            let rows: Vec<Vec<String>> = catalog.specs().map(spec_row).collect();
            print!(
                "{}",
                table(
                    &["FLOW", "INPUTS", "OUTPUT", "PARAMS", "DESCRIPTION"],
                    &rows
                )
            );
            Ok(())
        }
        Verb::Run {
            flow,
            inputs,
            params,
            entity,
        } => run_one(&catalog, &flow, &inputs, &params, entity, json),
    }
}

fn spec_row(s: &FlowSpec) -> Vec<String> {
    let inputs: Vec<String> = s
        .inputs
        .iter()
        .map(|i| {
            let optional = if i.optional { "?" } else { "" };
            format!("{}:{}{optional}", i.name, i.value_type)
        })
        .collect();
    let params: Vec<String> = s
        .params
        .iter()
        .map(|p| {
            let default = p.default.as_deref().unwrap_or("<required>");
            format!("{}={default}", p.name)
        })
        .collect();
    vec![
        s.id.to_string(),
        inputs.join(" "),
        s.output.to_string(),
        params.join(" "),
        s.description.clone(),
    ]
}

/// `name@version`, or the latest version of `name`.
fn resolve(catalog: &Catalog, flow: &str) -> anyhow::Result<FlowId> {
    match flow.parse::<FlowId>() {
        Ok(id) => Ok(id),
        Err(_) => catalog
            .ids()
            .filter(|id| id.name == flow)
            .max_by_key(|id| id.version)
            .cloned()
            .ok_or_else(|| {
                usage(format!(
                    "no flow named `{flow}`; `fstore flow ls` lists them"
                ))
            }),
    }
}

/// `name=value` params.
fn parse_params(params: &[String]) -> anyhow::Result<fstore_flows::Params> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| usage(format!("param `{p}` must be written name=value")))
        })
        .collect()
}

fn run_one(
    catalog: &Catalog,
    flow: &str,
    inputs: &[String],
    params: &[String],
    entity: String,
    json: bool,
) -> anyhow::Result<()> {
    let id = resolve(catalog, flow)?;
    let f = catalog
        .get(&id)
        .ok_or_else(|| usage(format!("no flow {id}; `fstore flow ls` lists them")))?;
    let mut values = BTreeMap::new();
    for i in inputs {
        let (name, wire) = crate::input::parse(i)?;
        let v = fstore_substrate::convert::to_flow(&wire)
            .map_err(|e| usage(format!("input `{name}`: {e}")))?;
        values.insert(name, v);
    }
    let params = parse_params(params)?;
    f.check_params(&params)
        .map_err(|e| usage(format!("{id}: {e}")))?;
    let input = fstore_flows::FlowInput {
        entity_id: entity,
        params,
        values,
        attempt: 1,
    };
    let started = std::time::Instant::now();
    let out = f.run(std::slice::from_ref(&input)).into_iter().next();
    let took = started.elapsed();
    match out {
        Some(Ok(v)) => {
            let wire =
                fstore_substrate::convert::to_wire(&v).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                print_json(&value_json(Some(&wire)))
            } else {
                println!("{id} -> {}  ({took:?})", value_text(Some(&wire)));
                Ok(())
            }
        }
        Some(Err(e)) => {
            let kind = if e.is_transient() {
                "transient"
            } else {
                "permanent"
            };
            bail!("{id} failed ({kind}): {e}")
        }
        None => bail!("{id} returned no result"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_the_latest_version() {
        let catalog = Catalog::builtins();
        let id = resolve(&catalog, "text.stats").expect("a built-in flow");
        assert_eq!(id.to_string(), "text.stats@1");
        let e = resolve(&catalog, "no.such")
            .err()
            .map(|e| crate::error::Report::of(&e));
        assert_eq!(e.map(|r| r.exit_code), Some(2));
    }

    #[test]
    fn params_are_name_value() {
        let p = parse_params(&["stat=words".into()]).expect("valid");
        assert_eq!(p.get("stat"), Some("words"));
        assert!(parse_params(&["stat".into()]).is_err());
    }
}
