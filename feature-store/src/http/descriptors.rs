//! The public API as its descriptors describe it: messages, their fields with their
//! proto3 JSON names and types, enums, the service's methods, and the comments of the
//! `.proto` file. Read once from [`fstore_proto::FILE_DESCRIPTOR_SET`]; what the HTTP
//! API decodes query strings with and what the OpenAPI document is generated from, so
//! neither can drift from the proto.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

/// The package of the public API.
pub const PACKAGE: &str = "featurestore.v1";

/// One field of a message.
#[derive(Debug, Clone)]
pub struct Field {
    /// The proto name (`entity_id`).
    pub name: String,
    /// The proto3 JSON name (`entityId`).
    pub json_name: String,
    pub kind: Type,
    /// The message or enum a field of that kind names, fully qualified without the dot.
    pub type_name: String,
    pub repeated: bool,
    /// A map field: the entry message (key field 1, value field 2).
    pub map_entry: Option<String>,
    pub doc: String,
}

/// One message: its fields and its comment.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    pub fields: Vec<Field>,
    pub doc: String,
    pub map_entry: bool,
}

/// One RPC of the service.
#[derive(Debug, Clone)]
pub struct Method {
    pub input: String,
    pub output: String,
    pub server_streaming: bool,
    pub doc: String,
}

/// Everything the HTTP API needs to know about the proto.
#[derive(Debug, Default)]
pub struct Api {
    pub messages: HashMap<String, Msg>,
    /// Enum name → its value names.
    pub enums: HashMap<String, Vec<String>>,
    pub methods: HashMap<String, Method>,
}

/// The API, decoded once.
pub fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        // Built by this crate's own build: a set that does not decode is a build defect.
        let set = FileDescriptorSet::decode(fstore_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let mut api = Api::default();
        for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
            index_file(&mut api, file);
        }
        mark_maps(&mut api);
        api
    })
}

impl Api {
    pub fn message(&self, name: &str) -> Option<&Msg> {
        self.messages.get(name)
    }

    /// A field of `message` by its proto or JSON name.
    pub fn field(&self, message: &str, name: &str) -> Option<&Field> {
        self.messages
            .get(message)?
            .fields
            .iter()
            .find(|f| f.name == name || f.json_name == name)
    }
}

fn index_file(api: &mut Api, file: &FileDescriptorProto) {
    let comments = Comments::of(file);
    for (i, m) in file.message_type.iter().enumerate() {
        index_message(api, &comments, PACKAGE, m, &[4, i as i32]);
    }
    for e in &file.enum_type {
        let values = e.value.iter().map(|v| v.name().to_string()).collect();
        api.enums.insert(format!("{PACKAGE}.{}", e.name()), values);
    }
    for (si, service) in file.service.iter().enumerate() {
        for (mi, m) in service.method.iter().enumerate() {
            api.methods.insert(
                m.name().to_string(),
                Method {
                    input: m.input_type().trim_start_matches('.').to_string(),
                    output: m.output_type().trim_start_matches('.').to_string(),
                    server_streaming: m.server_streaming(),
                    doc: comments.get(&[6, si as i32, 2, mi as i32]),
                },
            );
        }
    }
}

fn index_message(
    api: &mut Api,
    comments: &Comments,
    scope: &str,
    m: &DescriptorProto,
    path: &[i32],
) {
    let name = format!("{scope}.{}", m.name());
    for (i, nested) in m.nested_type.iter().enumerate() {
        let mut p = path.to_vec();
        p.extend([3, i as i32]);
        index_message(api, comments, &name, nested, &p);
    }
    for e in &m.enum_type {
        let values = e.value.iter().map(|v| v.name().to_string()).collect();
        api.enums.insert(format!("{name}.{}", e.name()), values);
    }
    let fields = m
        .field
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let type_name = f.type_name().trim_start_matches('.').to_string();
            let mut p = path.to_vec();
            p.extend([2, i as i32]);
            let repeated = f.label() == Label::Repeated;
            Field {
                name: f.name().to_string(),
                json_name: f.json_name().to_string(),
                kind: f.r#type(),
                map_entry: None,
                repeated,
                type_name,
                doc: comments.get(&p),
            }
        })
        .collect();
    let map_entry = m
        .options
        .as_ref()
        .is_some_and(|o| o.map_entry.unwrap_or(false));
    api.messages.insert(
        name,
        Msg {
            fields,
            doc: comments.get(path),
            map_entry,
        },
    );
}

/// Marks map fields: repeated fields of a map-entry message type.
fn mark_maps(api: &mut Api) {
    let entries: Vec<String> = api
        .messages
        .iter()
        .filter(|(_, m)| m.map_entry)
        .map(|(n, _)| n.clone())
        .collect();
    for msg in api.messages.values_mut() {
        for f in &mut msg.fields {
            if f.kind == Type::Message && entries.contains(&f.type_name) {
                f.map_entry = Some(f.type_name.clone());
            }
        }
    }
}

/// The leading comments of a file's elements, by their source path.
struct Comments(HashMap<Vec<i32>, String>);

impl Comments {
    fn of(file: &FileDescriptorProto) -> Self {
        let mut map = HashMap::new();
        for loc in file
            .source_code_info
            .as_ref()
            .map(|s| s.location.as_slice())
            .unwrap_or_default()
        {
            let text = loc.leading_comments().trim();
            if !text.is_empty() {
                let doc = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
                map.insert(loc.path.clone(), doc);
            }
        }
        Comments(map)
    }

    fn get(&self, path: &[i32]) -> String {
        self.0.get(path).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_read_with_its_json_names_and_comments() {
        let api = api();
        let get = &api.methods["GetFeatures"];
        assert_eq!(get.input, "featurestore.v1.GetFeaturesRequest");
        assert!(get.doc.contains("cached values"), "{}", get.doc);
        assert!(api.methods["WatchFeatures"].server_streaming);
        let f = api
            .field("featurestore.v1.GetFeaturesRequest", "max_staleness_ms")
            .expect("field");
        assert_eq!(f.json_name, "maxStalenessMs");
        let by = api
            .field(
                "featurestore.v1.GetFeaturesRequest",
                "maxStalenessMsByFeature",
            )
            .expect("map field");
        assert!(by.map_entry.is_some(), "{by:?}");
        assert!(api.enums["featurestore.v1.Status"].contains(&"STATUS_READY".to_string()));
        assert!(api.enums.contains_key("featurestore.v1.LogRecord.Kind"));
    }
}
