//! What the verbs print: aligned text tables by default, JSON with `--json`.

use std::fmt::Write as _;
use std::time::Duration;

use fstore_proto::api;
use serde_json::{Value as Json, json};

/// Prints a JSON document, pretty, on stdout.
pub fn print_json(value: &Json) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A plain text table with aligned columns and no trailing spaces.
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

/// A short rendering of a value for tables.
pub fn value_text(v: Option<&api::Value>) -> String {
    use api::value::Kind;
    match v.and_then(|v| v.kind.as_ref()) {
        None => String::new(),
        Some(Kind::F64(x)) => format!("{x:.6}"),
        Some(Kind::I64(x)) => x.to_string(),
        Some(Kind::Bool(x)) => x.to_string(),
        Some(Kind::String(s)) => format!("{:?}", fstore::names::truncate(s, 40)),
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
        Some(Kind::Relation(r)) => {
            let head: Vec<&str> = r.ids.iter().take(3).map(String::as_str).collect();
            format!(
                "{} [{}{}]",
                r.entity_type,
                head.join(", "),
                if r.ids.len() > 3 { ", …" } else { "" }
            )
        }
    }
}

/// A value as JSON: numbers, booleans and strings as themselves, bytes by length.
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
        Some(Kind::Relation(r)) => json!({ "entity_type": r.entity_type, "ids": r.ids }),
    }
}

pub fn status_name(s: api::Status) -> &'static str {
    match s {
        api::Status::Ready => "READY",
        api::Status::Stale => "STALE",
        api::Status::Pending => "PENDING",
        api::Status::Failed => "FAILED",
        api::Status::Canceled => "CANCELED",
        api::Status::Unspecified => "?",
    }
}

/// A value type as written in registration files and flow specs (`f64`, `tensor`, ...).
pub fn type_name(t: i32) -> String {
    api::ValueType::try_from(t)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("VALUE_TYPE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".to_string())
}

/// A duration in milliseconds, as `1h 30m`.
pub fn millis_text(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Milliseconds since the epoch, as an RFC 3339 timestamp (negative ones as the epoch).
pub fn timestamp_text(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// A feature log event in its JSON form (one line per event with `fstore events --json`):
/// the fields of `featurestore.v1.LogEvent` and its `LogRecord`, by their proto names,
/// values as [`value_json`] writes them.
pub fn event_json(e: &api::LogEvent) -> Json {
    let r = e.record.clone().unwrap_or_default();
    let inputs: serde_json::Map<String, Json> = r
        .inputs
        .iter()
        .map(|(k, v)| (k.clone(), value_json(Some(v))))
        .collect();
    json!({
        "sequence": e.sequence,
        "kind": r.kind().as_str_name().trim_start_matches("KIND_"),
        "tenant": r.tenant,
        "entity_id": r.entity_id,
        "feature": r.feature,
        "version": r.version,
        "lineage_hash": r.lineage_hash,
        "value_key": r.value_key,
        "status": status_name(r.status()),
        "value": value_json(r.value.as_ref()),
        "error": r.error,
        "attempts": r.attempts,
        "computed_at_ms": r.computed_at_ms,
        "planned_at_ms": r.planned_at_ms,
        "inputs": inputs,
        "dependencies": r.dependencies,
        "tickets": r.tickets,
    })
}

/// One line of `fstore events`.
pub fn event_text(e: &api::LogEvent) -> String {
    let r = e.record.clone().unwrap_or_default();
    if r.kind() == api::log_record::Kind::Inputs {
        let names: Vec<&str> = r.inputs.keys().map(String::as_str).collect();
        return format!(
            "{:>8} {} {:<16} inputs {}",
            e.sequence,
            timestamp_text(r.computed_at_ms),
            r.entity_id,
            names.join(",")
        );
    }
    format!(
        "{:>8} {} {:<16} {}@{} {:<8} {}",
        e.sequence,
        timestamp_text(r.computed_at_ms),
        r.entity_id,
        r.feature,
        r.version,
        status_name(r.status()),
        if r.error.is_empty() {
            value_text(r.value.as_ref())
        } else {
            r.error.clone()
        }
    )
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

/// A GetFeatures answer: the results table, then the ticket if something is pending.
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

/// Prints a GetFeatures answer as a table or as JSON.
pub fn print_response(r: &api::GetFeaturesResponse, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(&response_json(r))
    } else {
        print!("{}", response_text(r));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_value(x: f64) -> api::Value {
        api::Value {
            kind: Some(api::value::Kind::F64(x)),
        }
    }

    #[test]
    fn tables_align_and_trim() {
        let t = table(
            &["A", "LONGER", "C"],
            &[
                vec!["wide cell".into(), "x".into(), String::new()],
                vec!["y".into(), "z".into(), "end".into()],
            ],
        );
        assert_eq!(
            t,
            "A          LONGER  C\nwide cell  x\ny          z       end\n"
        );
    }

    #[test]
    fn values_render_short() {
        assert_eq!(value_text(None), "");
        assert_eq!(value_text(Some(&f64_value(1.234_567_89))), "1.234568");
        let long = api::Value {
            kind: Some(api::value::Kind::String("x".repeat(50))),
        };
        assert_eq!(value_text(Some(&long)), format!("\"{}…\"", "x".repeat(40)));
        let bytes = api::Value {
            kind: Some(api::value::Kind::Bytes(vec![0; 7])),
        };
        assert_eq!(value_text(Some(&bytes)), "7 bytes");
        assert_eq!(value_json(Some(&bytes)), json!({"bytes": 7}));
        assert_eq!(value_json(Some(&f64_value(1.5))), json!(1.5));
        assert_eq!(value_json(None), Json::Null);
    }

    #[test]
    fn a_response_shows_where_values_came_from_and_the_ticket() {
        let resp = api::GetFeaturesResponse {
            ticket: "t1".into(),
            canceled: false,
            results: vec![
                api::FeatureResult {
                    entity_id: "doc:1".into(),
                    feature: "doc.words".into(),
                    version: 1,
                    status: api::Status::Ready as i32,
                    value: Some(f64_value(9.0)),
                    computed_at_ms: 1,
                    age_ms: 152,
                    ..Default::default()
                },
                api::FeatureResult {
                    entity_id: "doc:2".into(),
                    feature: "doc.words".into(),
                    version: 1,
                    status: api::Status::Failed as i32,
                    error: "bad input".into(),
                    attempts: 3,
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            response_text(&resp),
            "ENTITY  FEATURE    VER  STATUS  VALUE     AGE    SOURCE\n\
             doc:1   doc.words  1    READY   9.000000  152ms  computed\n\
             doc:2   doc.words  1    FAILED                   bad input (tries: 3)\n\
             ticket: t1  (fetch it with `fstore fetch t1`)\n"
        );
        let j = response_json(&resp);
        assert_eq!(j["ticket"], "t1");
        assert_eq!(j["results"][0]["status"], "READY");
        assert_eq!(j["results"][1]["attempts"], 3);
    }

    #[test]
    fn type_names_drop_the_prefix() {
        assert_eq!(type_name(api::ValueType::Tensor as i32), "tensor");
        assert_eq!(type_name(-1), "?");
    }
}
