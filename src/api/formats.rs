//! The schema formats a Kubernetes API server recognises, and the CRD rewritten to use only those.
//!
//! schemars names Rust's integer widths (`uint32`, `uint64`, `uint8`, …); the API server knows
//! `int32` and `int64` for integers, `float` and `double` for numbers, and a fixed list for
//! strings (k8s.io/apiextensions-apiserver, `pkg/apiserver/validation/formats.go`). Anything else
//! makes `kubectl apply` print `unrecognized format "uint32"` and is ignored by validation anyway,
//! so poolwarden's CRD carries only formats from that list. Unsigned fields keep the `minimum: 0`
//! schemars gives them, so nothing the API server checked before is lost.

use serde_json::Value;

/// String formats the API server validates (its normalised names: no dashes), as of 1.33.
pub const STRING_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "quantity",
];

/// Whether the API server recognises `format` on a schema of type `schema_type`.
pub fn is_recognised(schema_type: Option<&str>, format: &str) -> bool {
    match schema_type {
        Some("integer") => matches!(format, "int32" | "int64"),
        Some("number") => matches!(format, "float" | "double"),
        None | Some("string") => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        Some(_) => false,
    }
}

/// Rewrites every format in `schema` (recursively) to one the API server recognises: integer
/// widths become `int32` (up to 16 bits) or `int64`, and any other unknown format is dropped.
pub fn make_recognisable(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            let schema_type = object
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(Value::String(format)) = object.get("format") {
                match recognisable(schema_type.as_deref(), format) {
                    Some(format) => {
                        object.insert("format".into(), Value::String(format));
                    }
                    None => {
                        object.remove("format");
                    }
                }
            }
            object.values_mut().for_each(make_recognisable);
        }
        Value::Array(items) => items.iter_mut().for_each(make_recognisable),
        _ => {}
    }
}

fn recognisable(schema_type: Option<&str>, format: &str) -> Option<String> {
    if is_recognised(schema_type, format) {
        return Some(format.to_owned());
    }
    match (schema_type, format) {
        (Some("integer"), "int8" | "int16" | "uint8" | "uint16") => Some("int32".into()),
        (Some("integer"), "uint32" | "uint64" | "uint" | "int" | "uint128" | "int128") => {
            Some("int64".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unsigned_widths_become_the_signed_formats_the_api_server_knows() {
        let mut schema = json!({
            "properties": {
                "small": {"type": "integer", "format": "uint16", "minimum": 0},
                "count": {"type": "integer", "format": "uint32", "minimum": 0},
                "total": {"type": "integer", "format": "uint64", "minimum": 0},
                "ratio": {"type": "number", "format": "float"},
                "list": {"type": "array", "items": {"type": "integer", "format": "uint32"}},
                "when": {"type": "string", "format": "date-time"},
                "odd": {"type": "string", "format": "rust-path"},
            }
        });
        make_recognisable(&mut schema);
        let p = &schema["properties"];
        assert_eq!(
            p["small"],
            json!({"type": "integer", "format": "int32", "minimum": 0})
        );
        assert_eq!(
            p["count"],
            json!({"type": "integer", "format": "int64", "minimum": 0})
        );
        assert_eq!(p["total"]["format"], "int64");
        assert_eq!(p["ratio"]["format"], "float");
        assert_eq!(p["list"]["items"]["format"], "int64");
        assert_eq!(p["when"]["format"], "date-time");
        assert_eq!(p["odd"], json!({"type": "string"}));
    }

    #[test]
    fn only_the_api_servers_list_is_recognised() {
        assert!(is_recognised(Some("integer"), "int32"));
        assert!(!is_recognised(Some("integer"), "uint32"));
        assert!(is_recognised(Some("string"), "date-time"));
        assert!(!is_recognised(Some("boolean"), "int32"));
    }
}
