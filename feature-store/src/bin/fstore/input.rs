//! Request-time inputs written on the command line: `name=text`, or `name:TYPE=value`
//! with TYPE one of f64, i64, bool, string, bytes, file (the bytes of a file at that
//! path), tensor (comma-separated f32s).

use fstore_proto::api;

/// An input argument that cannot be turned into a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("input `{0}` must be written name=value or name:type=value")]
    Syntax(String),
    #[error("input `{name}`: `{raw}` is not {expected}")]
    NotA {
        name: String,
        raw: String,
        expected: &'static str,
    },
    #[error("input `{name}`: cannot read {path}")]
    Read {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "input `{name}`: unknown type `{ty}` (f64, i64, bool, string, bytes, file, tensor, rel.ENTITY_TYPE)"
    )]
    UnknownType { name: String, ty: String },
}

/// Parses one `-i` argument into its name and value.
pub fn parse(arg: &str) -> Result<(String, api::Value), Error> {
    use api::value::Kind;
    let (lhs, raw) = arg
        .split_once('=')
        .ok_or_else(|| Error::Syntax(arg.to_string()))?;
    let (name, ty) = lhs.split_once(':').unwrap_or((lhs, "string"));
    let not_a = |expected| Error::NotA {
        name: name.to_string(),
        raw: raw.to_string(),
        expected,
    };
    let kind = match ty {
        "string" => Kind::String(raw.to_string()),
        "f64" => Kind::F64(raw.parse().map_err(|_| not_a("a number"))?),
        "i64" => Kind::I64(raw.parse().map_err(|_| not_a("a whole number"))?),
        "bool" => Kind::Bool(raw.parse().map_err(|_| not_a("true or false"))?),
        "file" => Kind::Bytes(std::fs::read(raw).map_err(|source| Error::Read {
            name: name.to_string(),
            path: raw.to_string(),
            source,
        })?),
        "bytes" => Kind::Bytes(raw.as_bytes().to_vec()),
        "tensor" => {
            let data = raw
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| not_a("comma-separated numbers"))?;
            Kind::Tensor(api::Tensor {
                shape: vec![data.len() as u64],
                data,
            })
        }
        // Related entities: `history:rel.title=t1,t2`.
        rel if rel.starts_with("rel.") && rel.len() > 4 => Kind::Relation(api::Relation {
            entity_type: rel[4..].to_string(),
            ids: raw
                .split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect(),
        }),
        other => {
            return Err(Error::UnknownType {
                name: name.to_string(),
                ty: other.to_string(),
            });
        }
    };
    Ok((name.to_string(), api::Value { kind: Some(kind) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::value_text;

    #[test]
    fn inputs_parse_with_types() {
        let (n, v) = parse("text=hello world").expect("string");
        assert_eq!(n, "text");
        assert_eq!(value_text(Some(&v)), "\"hello world\"");
        let (_, v) = parse("x:f64=1.5").expect("f64");
        assert_eq!(value_text(Some(&v)), "1.500000");
        let (_, v) = parse("n:i64=-3").expect("i64");
        assert_eq!(value_text(Some(&v)), "-3");
        let (_, v) = parse("v:tensor=1,2,3,4").expect("tensor");
        assert_eq!(value_text(Some(&v)), "tensor[4] [1.000, 2.000, 3.000, …]");
        let (n, v) = parse("eq=a=b").expect("the first = splits");
        assert_eq!((n.as_str(), value_text(Some(&v))), ("eq", "\"a=b\"".into()));
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let msg = |arg: &str| parse(arg).err().map(|e| e.to_string());
        assert_eq!(
            msg("x:f64=abc").as_deref(),
            Some("input `x`: `abc` is not a number")
        );
        assert!(matches!(parse("novalue"), Err(Error::Syntax(_))));
        assert!(matches!(
            parse("x:u8=1"),
            Err(Error::UnknownType { ty, .. }) if ty == "u8"
        ));
        assert!(matches!(
            parse("img:file=/nonexistent/fstore-input"),
            Err(Error::Read { .. })
        ));
    }
}
