//! Limits on every client-supplied size and depth, shared by the gateway (which answers 400
//! before anything is converted or sent) and the services (INVALID_ARGUMENT, so gRPC callers
//! meet the same rules).
//!
//! Free-form JSON (metadata, check attributes) travels as `google.protobuf.Struct`, where each
//! JSON level costs three protobuf message levels (Struct, map entry, Value) and prost refuses
//! to decode past 100: 33 JSON levels fail to decode, fewer can still overflow once wrapped
//! in change events. [`MAX_FREEFORM_DEPTH`] keeps far below both.

use serde_json::Value;

/// Deepest nesting of a whole REST body, checked on the raw bytes before deserialising
/// (serde_json's own limit, 128, is far past what protobuf conversion survives).
pub const MAX_BODY_DEPTH: usize = 32;
/// Deepest nesting inside one free-form object (`{}` is depth 1).
pub const MAX_FREEFORM_DEPTH: usize = 10;
/// Longest key inside a free-form object, in characters.
pub const MAX_FREEFORM_KEY_CHARS: usize = 256;
/// Largest account logo (a base64 data URL or URL), in bytes.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;

/// Longest ID, key or name a client may send (user IDs, permission keys, feature keys).
pub const MAX_ID_CHARS: usize = 255;
/// Longest route path in a route check.
pub const MAX_PATH_CHARS: usize = 2_048;
/// Most permissions a check's subject may carry.
pub const MAX_SUBJECT_PERMISSIONS: usize = 1_000;
/// Most accounts one REST migration request may list (gRPC callers stream larger jobs).
pub const MAX_MIGRATION_REQUEST_ITEMS: usize = 10_000;

/// Limits of one kind of free-form JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freeform {
    /// Serialized size, in bytes.
    pub max_bytes: usize,
    /// Keys at every level together.
    pub max_keys: usize,
    /// Nesting depth (`{}` is 1).
    pub max_depth: usize,
}

/// Metadata of accounts, features, plans, flags and grants.
pub const METADATA: Freeform = Freeform {
    max_bytes: 64 * 1024,
    max_keys: 1_000,
    max_depth: MAX_FREEFORM_DEPTH,
};

/// Subject attributes of an entitlement check.
pub const ATTRIBUTES: Freeform = Freeform {
    max_bytes: 16 * 1024,
    max_keys: 256,
    max_depth: MAX_FREEFORM_DEPTH,
};

/// Checks a free-form value; the error says what is over which limit (for a field violation).
pub fn check_freeform(value: &Value, limits: &Freeform) -> Result<(), String> {
    let mut keys = 0_usize;
    // Iterative, so a hostile depth cannot overflow the stack here either.
    let mut stack = vec![(value, 1_usize)];
    while let Some((v, depth)) = stack.pop() {
        let nested = matches!(v, Value::Object(_) | Value::Array(_));
        if nested && depth > limits.max_depth {
            return Err(format!(
                "is nested more than {} levels deep",
                limits.max_depth
            ));
        }
        match v {
            Value::Object(map) => {
                keys += map.len();
                if keys > limits.max_keys {
                    return Err(format!("has more than {} keys", limits.max_keys));
                }
                for (k, child) in map {
                    if k.chars().count() > MAX_FREEFORM_KEY_CHARS {
                        return Err(format!(
                            "has a key longer than {MAX_FREEFORM_KEY_CHARS} characters"
                        ));
                    }
                    stack.push((child, depth + 1));
                }
            }
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if size > limits.max_bytes {
        return Err(format!(
            "is {size} bytes serialized; at most {} are allowed",
            limits.max_bytes
        ));
    }
    Ok(())
}

/// Whether raw JSON nests deeper than `max` (objects and arrays), without parsing it. Text
/// that is not JSON is left to the parser to refuse.
pub fn json_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0_usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                (false, _) => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_keys_key_length_and_size_are_bounded() {
        assert!(check_freeform(&nested(10), &METADATA).is_ok());
        let err = check_freeform(&nested(11), &METADATA).unwrap_err();
        assert!(err.contains("10 levels"), "{err}");
        assert!(check_freeform(&json!([[[[[[[[[[[]]]]]]]]]]]), &METADATA).is_err());
        let many: serde_json::Map<String, Value> =
            (0..257).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(
            check_freeform(&Value::Object(many), &ATTRIBUTES)
                .unwrap_err()
                .contains("keys")
        );
        let long_key = json!({ "k".repeat(257): 1 });
        assert!(check_freeform(&long_key, &METADATA).is_err());
        let big = json!({ "k": "x".repeat(16 * 1024) });
        assert!(
            check_freeform(&big, &ATTRIBUTES)
                .unwrap_err()
                .contains("bytes")
        );
        assert!(check_freeform(&big, &METADATA).is_ok());
    }

    #[test]
    fn raw_depth_ignores_brackets_in_strings() {
        assert!(!json_deeper_than(
            br#"{"a": [1, {"b": "[[[[{{{{\"[["}]}"#,
            3
        ));
        assert!(json_deeper_than(br#"{"a": [1, {"b": [[]]}]}"#, 4));
        assert!(!json_deeper_than(br#"{"a": [1, {"b": [[]]}]}"#, 5));
        let deep = "[".repeat(10_000);
        assert!(json_deeper_than(deep.as_bytes(), MAX_BODY_DEPTH));
    }
}
