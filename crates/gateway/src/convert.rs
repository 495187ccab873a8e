//! JSON ⇄ protobuf well-known types: `google.protobuf.Struct`/`Value` and `Timestamp`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value, value::Kind};
use serde_json::{Map, Number, Value as Json};

use tenantry_common::limits::{ATTRIBUTES, Freeform, METADATA};

use crate::error::ApiError;

pub fn json_to_value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    Value { kind: Some(kind) }
}

pub fn map_to_struct(map: Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

/// Refuses free-form JSON over `limits` (depth, keys, size), naming the field.
pub fn check_freeform(json: &Json, field: &str, limits: &Freeform) -> Result<(), ApiError> {
    tenantry_common::limits::check_freeform(json, limits)
        .map_err(|problem| ApiError::invalid_field(field, problem))
}

/// Check attributes as a Struct, within the attribute limits.
pub fn attributes_to_struct(map: Map<String, Json>, field: &str) -> Result<Struct, ApiError> {
    let json = Json::Object(map);
    check_freeform(&json, field, &ATTRIBUTES)?;
    let Json::Object(map) = json else {
        return Ok(Struct::default());
    };
    Ok(map_to_struct(map))
}

/// A JSON object as a Struct (within the metadata limits); `field` names the request field in
/// the error otherwise.
pub fn object_to_struct(json: Json, field: &str) -> Result<Struct, ApiError> {
    check_freeform(&json, field, &METADATA)?;
    match json {
        Json::Object(map) => Ok(map_to_struct(map)),
        Json::Null => Ok(Struct::default()),
        Json::Bool(_) | Json::Number(_) | Json::String(_) | Json::Array(_) => {
            Err(ApiError::invalid_field(field, "must be a JSON object"))
        }
    }
}

/// Frontegg sends `metadata` as a JSON string holding an object; we also accept the object.
pub fn metadata_to_struct(json: Option<Json>, field: &str) -> Result<Option<Struct>, ApiError> {
    match json {
        None => Ok(None),
        Some(Json::String(s)) if s.trim().is_empty() => Ok(Some(Struct::default())),
        Some(Json::String(s)) => match serde_json::from_str::<Json>(&s) {
            Ok(object @ Json::Object(_)) => object_to_struct(object, field).map(Some),
            Ok(_) | Err(_) => Err(ApiError::invalid_field(
                field,
                "must be a JSON object or a string holding a JSON object",
            )),
        },
        Some(other) => object_to_struct(other, field).map(Some),
    }
}

pub fn value_to_json(value: Value) -> Json {
    match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// Whole numbers come back as integers, as the caller most likely sent them.
fn number_to_json(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Json::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

pub fn struct_to_json(s: Struct) -> Json {
    Json::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

/// An optional Struct as a JSON object (`{}` when unset).
pub fn opt_struct_to_json(s: Option<Struct>) -> Json {
    s.map_or_else(|| Json::Object(Map::new()), struct_to_json)
}

pub fn timestamp_to_string(ts: &Timestamp) -> String {
    DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or_default())
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn opt_timestamp(ts: Option<Timestamp>) -> Option<String> {
    ts.as_ref().map(timestamp_to_string)
}

/// RFC 3339, or Frontegg's zone-less `2022-01-01T12:00:00` (read as UTC), or a bare date.
pub fn parse_time(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    let utc = DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
                .map(|n| n.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|n| n.and_utc())
        })?;
    Some(Timestamp {
        seconds: utc.timestamp(),
        nanos: i32::try_from(utc.timestamp_subsec_nanos()).unwrap_or_default(),
    })
}

/// [`parse_time`] with the field named in the error.
pub fn parse_time_field(value: &str, field: &str) -> Result<Timestamp, ApiError> {
    parse_time(value).ok_or_else(|| {
        ApiError::invalid_field(
            field,
            "must be a date-time such as 2030-01-31T12:00:00Z (RFC 3339)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let json = serde_json::json!({"a": 1, "b": [true, null, "x"], "c": {"d": 1.5}});
        let Json::Object(map) = json.clone() else {
            unreachable!()
        };
        assert_eq!(struct_to_json(map_to_struct(map)), json);
    }

    #[test]
    fn metadata_accepts_object_or_string_of_object() {
        let s = metadata_to_struct(Some(serde_json::json!("{\"k\": 2}")), "metadata").unwrap();
        assert!(s.unwrap().fields.contains_key("k"));
        assert!(metadata_to_struct(Some(serde_json::json!("[1]")), "metadata").is_err());
        assert!(metadata_to_struct(Some(serde_json::json!(3)), "metadata").is_err());
    }

    #[test]
    fn frontegg_zone_less_dates_are_utc() {
        let t = parse_time("2022-01-01T12:00:00").unwrap();
        assert_eq!(timestamp_to_string(&t), "2022-01-01T12:00:00.000Z");
        let t = parse_time("2022-01-01T12:00:00+02:00").unwrap();
        assert_eq!(timestamp_to_string(&t), "2022-01-01T10:00:00.000Z");
        assert!(parse_time("tomorrow").is_none());
    }
}
