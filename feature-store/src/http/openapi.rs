//! The OpenAPI 3 document of the HTTP/JSON API, generated from the route table and the
//! proto's descriptors: one operation per route (its RPC's comment as the description),
//! one schema per message in the proto3 JSON mapping pbjson implements (camelCase names,
//! enums by name, 64-bit integers as strings, maps as objects, defaults omitted), so the
//! document says what the server does by construction. Served at `GET /openapi.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use prost_types::field_descriptor_proto::Type;
use serde_json::{Map, Value as Json, json};

use super::descriptors::{self, Api, Field};
use super::routes;

/// The document, built once.
pub fn document() -> Json {
    static DOC: OnceLock<Json> = OnceLock::new();
    DOC.get_or_init(build).clone()
}

fn build() -> Json {
    let api = descriptors::api();
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut used = BTreeSet::new();
    for route in routes() {
        let Some(method) = api.methods.get(route.rpc) else {
            continue;
        };
        let path = route.path.replace("{*", "{");
        let path_params: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        let mut op = json!({
            "operationId": route.rpc,
            "summary": first_sentence(&method.doc, route.rpc),
            "description": method.doc,
            "tags": [tag(route.path)],
        });
        let mut parameters: Vec<Json> = path_params
            .iter()
            .map(|name| {
                let field = api.field(&method.input, name);
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "description": field.map(|f| f.doc.clone()).unwrap_or_default(),
                    "schema": {"type": "string"},
                })
            })
            .collect();
        if route.body {
            used.insert(method.input.clone());
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": reference(&method.input)}},
            });
        } else if let Some(input) = api.message(&method.input) {
            for f in input
                .fields
                .iter()
                .filter(|f| !path_params.contains(&f.name))
            {
                if let Some(schema) = query_schema(api, f) {
                    parameters.push(json!({
                        "name": f.json_name,
                        "in": "query",
                        "required": false,
                        "description": f.doc,
                        "schema": schema,
                        "style": "form",
                        "explode": true,
                    }));
                }
            }
        }
        if route.rpc == "SubscribeEvents" {
            parameters.push(json!({
                "name": "Last-Event-ID",
                "in": "header",
                "required": false,
                "description": "Resume after this sequence (what a reconnecting EventSource sends); afterSequence wins",
                "schema": {"type": "string"},
            }));
        }
        if !parameters.is_empty() {
            op["parameters"] = Json::Array(parameters);
        }
        used.insert(method.output.clone());
        let ok = if method.server_streaming {
            json!({
                "description": format!(
                    "Server-sent events: each `data` is one {} as JSON; an `error` event carries an Error and ends the stream",
                    short(&method.output)
                ),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            })
        } else {
            json!({
                "description": short(&method.output),
                "content": {"application/json": {"schema": reference(&method.output)}},
            })
        };
        op["responses"] = json!({
            "200": ok,
            "default": {
                "description": "The call was refused: the HTTP status of its gRPC code",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        });
        paths
            .entry(path)
            .or_default()
            .insert(route.method.as_str().to_lowercase(), op);
    }
    let mut schemas = Map::new();
    let mut todo: Vec<String> = used.into_iter().collect();
    while let Some(name) = todo.pop() {
        if schemas.contains_key(&short(&name)) {
            continue;
        }
        let (schema, refs) = message_schema(api, &name);
        schemas.insert(short(&name), schema);
        todo.extend(refs);
    }
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "fstore HTTP/JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every call of featurestore.v1.FeatureStore as JSON (the proto3 JSON mapping), on the gRPC listener. \
                Send the API key as `Authorization: Bearer <key>` (or `x-fstore-api-key`); without authentication \
                (`fstore dev`) name the tenant in `x-fstore-tenant`.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// The first path segment after `/v1/`, without its custom verb: `features`, `tickets`.
fn tag(path: &str) -> String {
    path.trim_start_matches("/v1/")
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_string()
}

fn first_sentence(doc: &str, fallback: &str) -> String {
    let s = doc.split(". ").next().unwrap_or("").trim_end_matches('.');
    if s.is_empty() {
        fallback.to_string()
    } else {
        s.to_string()
    }
}

/// `featurestore.v1.LogRecord.Kind` → `LogRecord.Kind`.
fn short(name: &str) -> String {
    name.strip_prefix(descriptors::PACKAGE)
        .map(|s| s.trim_start_matches('.').to_string())
        .unwrap_or_else(|| name.to_string())
}

fn reference(name: &str) -> Json {
    json!({"$ref": format!("#/components/schemas/{}", short(name))})
}

/// The schema of a scalar or enum (None for messages): what a field reads as in JSON.
fn scalar_schema(api: &Api, kind: Type, type_name: &str) -> Option<Json> {
    Some(match kind {
        Type::Double | Type::Float => json!({"type": "number"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Type::Uint32 | Type::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Type::Uint64 | Type::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Enum => {
            let values = api.enums.get(type_name).cloned().unwrap_or_default();
            json!({"type": "string", "enum": values})
        }
        Type::Message | Type::Group => return None,
    })
}

/// A field as a query parameter: scalars and repeated scalars only.
fn query_schema(api: &Api, f: &Field) -> Option<Json> {
    if f.map_entry.is_some() {
        return None;
    }
    let item = scalar_schema(api, f.kind, &f.type_name)?;
    Some(if f.repeated {
        json!({"type": "array", "items": item})
    } else {
        item
    })
}

/// A field's schema, and the messages it refers to.
fn field_schema(api: &Api, f: &Field) -> (Json, Vec<String>) {
    if let Some(entry) = &f.map_entry {
        let value = api.field(entry, "value");
        let (v, refs) = value.map_or((json!({}), Vec::new()), |v| single(api, v));
        return (json!({"type": "object", "additionalProperties": v}), refs);
    }
    let (item, refs) = single(api, f);
    if f.repeated {
        (json!({"type": "array", "items": item}), refs)
    } else {
        (item, refs)
    }
}

fn single(api: &Api, f: &Field) -> (Json, Vec<String>) {
    match scalar_schema(api, f.kind, &f.type_name) {
        Some(s) => (s, Vec::new()),
        None => (reference(&f.type_name), vec![f.type_name.clone()]),
    }
}

fn message_schema(api: &Api, name: &str) -> (Json, Vec<String>) {
    let Some(msg) = api.message(name) else {
        return (json!({"type": "object"}), Vec::new());
    };
    let mut properties = Map::new();
    let mut refs = Vec::new();
    for f in &msg.fields {
        let (mut schema, mut r) = field_schema(api, f);
        if !f.doc.is_empty() {
            schema = match schema {
                // A $ref cannot carry siblings in OpenAPI 3.0: wrap it.
                Json::Object(o) if o.contains_key("$ref") => {
                    json!({"allOf": [Json::Object(o)], "description": f.doc})
                }
                Json::Object(mut o) => {
                    o.insert("description".into(), Json::String(f.doc.clone()));
                    Json::Object(o)
                }
                other => other,
            };
        }
        properties.insert(f.json_name.clone(), schema);
        refs.append(&mut r);
    }
    let mut schema = json!({"type": "object", "properties": properties});
    if !msg.doc.is_empty() {
        schema["description"] = Json::String(msg.doc.clone());
    }
    (schema, refs)
}

fn error_schema() -> Json {
    json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "The gRPC code's name, e.g. NOT_FOUND"},
            "message": {"type": "string", "description": "What was wrong and what to do"},
            "retryAfterMs": {"type": "integer", "description": "When to retry (quotas, a full queue)"},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_route_and_every_schema_it_refers_to() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        let get = &doc["paths"]["/v1/features:get"]["post"];
        assert_eq!(get["operationId"], "GetFeatures");
        assert_eq!(
            get["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/GetFeaturesRequest"
        );
        let ticket = &doc["paths"]["/v1/tickets/{ticket}"]["get"];
        assert_eq!(ticket["parameters"][0]["in"], "path");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let text = doc.to_string();
        for (at, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[at + 21..].chars().take_while(|c| *c != '"').collect();
            assert!(
                schemas.contains_key(&name),
                "{name} is referred to, not defined"
            );
        }
        let result = &schemas["FeatureResult"]["properties"];
        assert_eq!(result["entityId"]["type"], "string");
        assert_eq!(
            result["ageMs"]["type"], "string",
            "uint64 reads as a string"
        );
        assert!(
            result["status"]["enum"]
                .as_array()
                .is_some_and(|e| e.len() == 6)
        );
        let events = &doc["paths"]["/v1/events"]["get"]["parameters"];
        assert!(
            events.as_array().is_some_and(|p| p
                .iter()
                .any(|p| p["name"] == "features" && p["schema"]["type"] == "array")),
            "{events}"
        );
    }
}
