//! Client verbs of the `fstore` binary: a readable table by default, JSON with `--json`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use fstore_proto::api;
use serde_json::{Value as Json, json};
use tonic::Status;

pub use crate::client::Client;

pub fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Parses `name=text`, or `name:TYPE=value` with TYPE one of f64, i64, bool, string,
/// bytes, file (the bytes of a file at that path), tensor (comma-separated f32s).
pub fn parse_input(arg: &str) -> Result<(String, api::Value), String> {
    use api::value::Kind;
    let (lhs, raw) = arg
        .split_once('=')
        .ok_or_else(|| format!("input `{arg}` must be written name=value or name:type=value"))?;
    let (name, ty) = lhs.split_once(':').unwrap_or((lhs, "string"));
    let bad = |what: &str| format!("input `{name}`: `{raw}` is not {what}");
    let kind = match ty {
        "string" => Kind::String(raw.to_string()),
        "f64" => Kind::F64(raw.parse().map_err(|_| bad("a number"))?),
        "i64" => Kind::I64(raw.parse().map_err(|_| bad("a whole number"))?),
        "bool" => Kind::Bool(raw.parse().map_err(|_| bad("true or false"))?),
        "file" => Kind::Bytes(
            std::fs::read(raw).map_err(|e| format!("input `{name}`: cannot read {raw}: {e}"))?,
        ),
        "bytes" => Kind::Bytes(raw.as_bytes().to_vec()),
        "tensor" => {
            let data = raw
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("comma-separated numbers"))?;
            Kind::Tensor(api::Tensor {
                shape: vec![data.len() as u64],
                data,
            })
        }
        other => {
            return Err(format!(
                "input `{name}`: unknown type `{other}` (f64, i64, bool, string, bytes, file, tensor)"
            ));
        }
    };
    Ok((name.to_string(), api::Value { kind: Some(kind) }))
}

/// A short rendering of a value for tables.
pub fn value_text(v: Option<&api::Value>) -> String {
    use api::value::Kind;
    match v.and_then(|v| v.kind.as_ref()) {
        None => String::new(),
        Some(Kind::F64(x)) => format!("{x:.6}"),
        Some(Kind::I64(x)) => x.to_string(),
        Some(Kind::Bool(x)) => x.to_string(),
        Some(Kind::String(s)) => format!("{:?}", crate::names::truncate(s, 40)),
        Some(Kind::Bytes(b)) => format!("{} bytes", b.len()),
        Some(Kind::Tensor(t)) => {
            let head: Vec<String> = t.data.iter().take(3).map(|x| format!("{x:.3}")).collect();
            format!(
                "tensor{:?} [{}{}]",
                t.shape,
                head.join(", "),
                if t.data.len() > 3 { ", …" } else { "" }
            )
        }
    }
}

pub fn value_json(v: Option<&api::Value>) -> Json {
    use api::value::Kind;
    match v.and_then(|v| v.kind.as_ref()) {
        None => Json::Null,
        Some(Kind::F64(x)) => json!(x),
        Some(Kind::I64(x)) => json!(x),
        Some(Kind::Bool(x)) => json!(x),
        Some(Kind::String(s)) => json!(s),
        Some(Kind::Bytes(b)) => json!({ "bytes": b.len() }),
        Some(Kind::Tensor(t)) => json!({ "shape": t.shape, "data": t.data }),
    }
}

pub fn status_name(s: api::Status) -> &'static str {
    match s {
        api::Status::Ready => "READY",
        api::Status::Stale => "STALE",
        api::Status::Pending => "PENDING",
        api::Status::Failed => "FAILED",
        api::Status::Unspecified => "?",
    }
}

pub fn result_json(r: &api::FeatureResult) -> Json {
    json!({
        "entity": r.entity_id,
        "feature": r.feature,
        "version": r.version,
        "status": status_name(r.status()),
        "value": value_json(r.value.as_ref()),
        "computed_at_ms": r.computed_at_ms,
        "age_ms": r.age_ms,
        "from_cache": r.from_cache,
        "error": r.error,
        "attempts": r.attempts,
    })
}

/// A plain text table with aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, header.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

pub fn results_table(results: &[api::FeatureResult]) -> String {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let source = match r.status() {
                api::Status::Ready | api::Status::Stale => {
                    if r.from_cache {
                        "cache".to_string()
                    } else {
                        "computed".to_string()
                    }
                }
                api::Status::Failed => format!("{} (tries: {})", r.error, r.attempts),
                _ => String::new(),
            };
            vec![
                r.entity_id.clone(),
                r.feature.clone(),
                r.version.to_string(),
                status_name(r.status()).to_string(),
                value_text(r.value.as_ref()),
                if r.computed_at_ms > 0 {
                    format!("{}ms", r.age_ms)
                } else {
                    String::new()
                },
                source,
            ]
        })
        .collect();
    table(
        &[
            "ENTITY", "FEATURE", "VER", "STATUS", "VALUE", "AGE", "SOURCE",
        ],
        &rows,
    )
}

pub fn response_text(resp: &api::GetFeaturesResponse) -> String {
    let mut s = results_table(&resp.results);
    if !resp.ticket.is_empty() {
        let _ = writeln!(
            s,
            "ticket: {}  (fetch it with `fstore fetch {}`)",
            resp.ticket, resp.ticket
        );
    }
    s
}

pub fn response_json(resp: &api::GetFeaturesResponse) -> Json {
    json!({
        "ticket": resp.ticket,
        "results": resp.results.iter().map(result_json).collect::<Vec<_>>(),
    })
}

/// Builds a GetFeatures request from CLI arguments.
pub fn get_request(
    entities: &[String],
    features: &[String],
    inputs: &[String],
    sync: bool,
    wait: Option<Duration>,
    max_staleness: Option<Duration>,
    allow_stale: bool,
) -> Result<api::GetFeaturesRequest, String> {
    let parsed: HashMap<String, api::Value> = inputs
        .iter()
        .map(|i| parse_input(i))
        .collect::<Result<_, _>>()?;
    Ok(api::GetFeaturesRequest {
        entities: entities
            .iter()
            .map(|e| api::EntityRequest {
                entity_id: e.clone(),
                inputs: parsed.clone(),
            })
            .collect(),
        features: features.to_vec(),
        mode: if sync {
            api::Mode::Sync as i32
        } else {
            api::Mode::Async as i32
        },
        wait_ms: wait.map_or(0, |w| w.as_millis() as u64),
        max_staleness_ms: max_staleness.map(|d| d.as_millis() as u64),
        max_staleness_ms_by_feature: HashMap::new(),
        allow_stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_parse_with_types() {
        let (n, v) = parse_input("text=hello world").expect("string");
        assert_eq!(n, "text");
        assert_eq!(value_text(Some(&v)), "\"hello world\"");
        let (_, v) = parse_input("x:f64=1.5").expect("f64");
        assert_eq!(value_text(Some(&v)), "1.500000");
        let (_, v) = parse_input("v:tensor=1,2,3,4").expect("tensor");
        assert_eq!(value_text(Some(&v)), "tensor[4] [1.000, 2.000, 3.000, …]");
        assert!(parse_input("x:f64=abc").is_err());
        assert!(parse_input("novalue").is_err());
    }
}
