//! What every route shares, declared once on the generated document rather than on each route:
//! the identifier and paging rules the services enforce (by parameter name) and the error
//! responses of each route family. A generated client trusts the document, so a rule the
//! server enforces and the document omits is a request the client builds and we refuse.

use utoipa::{
    Modify,
    openapi::{
        ContentBuilder, KnownFormat, ObjectBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
        SchemaFormat, Type,
        path::{Operation, ParameterIn},
        schema::{AllOfBuilder, AnyOfBuilder, ArrayItems, OneOfBuilder, Schema, SchemaType},
    },
};

/// A tenant (account) ID: `tenantry_common::ids::tenant_id_problem` — 1 to 255 characters, no
/// whitespace, control characters or `/` (Rust's `char::is_whitespace`, spelled out).
pub const TENANT_ID_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f/\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$";
/// A tenant ID in the `frontegg-tenant-id` header: the same rule, and header values are visible
/// ASCII (`HeaderValue::to_str`), so no other character arrives.
const HEADER_TENANT_ID_PATTERN: &str = "^[!-.0-~]+$";
/// Text that must hold something besides whitespace (Rust's `str::trim`, spelled out).
const NON_BLANK_PATTERN: &str =
    "[^\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
/// An alias: 1 to 255 characters, no whitespace or control characters.
const ALIAS_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$";
/// A user ID from the customer's identity provider: opaque, no control characters, not blank.
const USER_ID_PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$";
/// Longest feature or plan key, in characters.
const MAX_KEY_CHARS: usize = 128;
/// Longest ID of any kind, in characters.
const MAX_ID_CHARS: usize = 255;
/// Largest page size of the account-management lists (`tenant::domain::list`).
const MAX_ACCOUNT_PAGE: f64 = 200.0;
/// Largest page size of the entitlement lists and of a migration's item errors.
const MAX_ENTITLEMENT_PAGE: f64 = 1000.0;

/// Bodies that name their target by exactly one of several fields; the others are absent or
/// `null` (the services refuse none or several with a field error).
const EXACTLY_ONE_OF: &[(&str, &[&str])] = &[
    ("CheckBody", &["feature", "permission", "route"]),
    ("BatchCheckItem", &["feature", "permission", "route"]),
    ("CreateFlagBody", &["featureId", "featureKey"]),
    ("NewEntitlement", &["planId", "planKey"]),
];

/// The route families and the error body each answers with, by path.
enum Family {
    /// Seed 003 (`{"error", "message"}`).
    Seed003,
    /// Seed 004 (Cloudflare's envelope).
    Seed004,
    /// Everything else: [`crate::error::ErrorBody`].
    Api,
    /// Probes (`/healthz`, `/readyz`): no token, their own answers.
    Probe,
}

fn family(path: &str) -> Family {
    if path.starts_with("/v1/entitlements/") {
        Family::Seed003
    } else if path.starts_with("/tenants/{tenant_id}/") {
        Family::Seed004
    } else if matches!(path, "/healthz" | "/readyz") {
        Family::Probe
    } else {
        Family::Api
    }
}

pub struct SharedRules;

impl Modify for SharedRules {
    fn modify(&self, openapi: &mut OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            for schema in components.schemas.values_mut() {
                declare_properties(schema);
            }
            // A member's user ID is checked by the tenant service (bodies elsewhere take any).
            if let Some(RefOr::T(Schema::Object(body))) =
                components.schemas.get_mut("AddMemberBody")
                && let Some(RefOr::T(Schema::Object(id))) = body.properties.get_mut("userId")
            {
                id.pattern = Some(USER_ID_PATTERN.to_owned());
                id.min_length = Some(1);
                id.max_length = Some(MAX_ID_CHARS);
            }
            // Feature and plan keys as Frontegg takes them (`validate::key_problem`): the
            // account-ID characters, up to 128.
            for name in [
                "CreateFeatureV1",
                "CreateFeatureV2",
                "UpdateFeatureV1",
                "UpdateFeatureV2",
                "CreatePlanBody",
                "UpdatePlanBody",
            ] {
                if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(name)
                    && let Some(RefOr::T(Schema::Object(key))) = body.properties.get_mut("key")
                {
                    key.pattern = Some(TENANT_ID_PATTERN.to_owned());
                    key.min_length = Some(1);
                    key.max_length = Some(MAX_KEY_CHARS);
                }
            }
            // A v2 feature's permission: its key is not blank.
            if let Some(RefOr::T(Schema::Object(permission))) =
                components.schemas.get_mut("Permission")
                && let Some(RefOr::T(Schema::Object(key))) =
                    permission.properties.get_mut("permissionKey")
            {
                key.pattern = Some(NON_BLANK_PATTERN.to_owned());
            }
            // A v1 feature's permissions: keys, none blank, none twice. (A check's subject
            // permissions are the caller's claims and taken as sent.)
            for name in ["CreateFeatureV1", "UpdateFeatureV1"] {
                if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(name)
                    && let Some(RefOr::T(Schema::Array(keys))) =
                        body.properties.get_mut("permissions")
                {
                    keys.unique_items = true;
                    if let ArrayItems::RefOrSchema(items) = &mut keys.items
                        && let RefOr::T(Schema::Object(key)) = items.as_mut()
                    {
                        key.pattern = Some(NON_BLANK_PATTERN.to_owned());
                    }
                }
            }
            for (name, fields) in EXACTLY_ONE_OF {
                if let Some(schema) = components.schemas.get_mut(*name) {
                    require_exactly_one(schema, fields);
                }
            }
            for (name, rule) in [
                ("CreateFeatureV1", merge_policy_needs_max_count()),
                ("CreateFeatureV2", merge_policy_needs_max_count()),
            ] {
                if let Some(schema) = components.schemas.get_mut(name) {
                    let body = std::mem::replace(schema, RefOr::T(Schema::default()));
                    *schema = AllOfBuilder::new().item(body).item(rule).into();
                }
            }
        }
        for (path, item) in &mut openapi.paths.paths {
            let family = family(path);
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                declare_parameters(path, operation);
                declare_errors(&family, operation);
            }
        }
    }
}

fn declare_parameters(path: &str, operation: &mut Operation) {
    let migrations = path.starts_with("/tenants/resources/migrations/");
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        let name = parameter.name.as_str();
        let schema = match parameter.parameter_in {
            ParameterIn::Path => match name {
                "id" | "planId" | "featureId" | "flagId" | "routeId" => uuid(),
                "tenantId" | "tenant_id" => text(TENANT_ID_PATTERN),
                "userId" | "user_id" => text(USER_ID_PATTERN),
                "alias" => text(ALIAS_PATTERN),
                _ => continue,
            },
            ParameterIn::Query => match name {
                "planId" => uuid(),
                "_limit" if !migrations => page_size(MAX_ACCOUNT_PAGE),
                "_limit" | "limit" => page_size(MAX_ENTITLEMENT_PAGE),
                "_offset" | "offset" => offset(),
                "minRevision" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0.0))
                    .maximum(Some(utoipa::Number::UInt(usize::MAX)))
                    .into(),
                _ => continue,
            },
            ParameterIn::Header if name == crate::auth::scope::TENANT_HEADER => {
                text(HEADER_TENANT_ID_PATTERN)
            }
            ParameterIn::Header | ParameterIn::Cookie | ParameterIn::QueryString => continue,
        };
        parameter.schema = Some(schema);
    }
}

/// The same account IDs in request and response bodies, wherever they are nested. (User IDs
/// are opaque in bodies: a check for a user no grant can name is simply not entitled.)
fn declare_properties(schema: &mut RefOr<Schema>) {
    if let RefOr::T(schema) = schema {
        declare_properties_of(schema);
    }
}

fn declare_properties_of(schema: &mut Schema) {
    match schema {
        Schema::Object(object) => {
            for (name, property) in &mut object.properties {
                let RefOr::T(property) = property else {
                    continue;
                };
                match (name.as_str(), property) {
                    ("tenantId" | "parentTenantId" | "childTenantId", Schema::Object(id)) => {
                        id.pattern = Some(TENANT_ID_PATTERN.to_owned());
                        id.min_length = Some(1);
                        id.max_length = Some(MAX_ID_CHARS);
                    }
                    // `u64` on the wire: the whole range, not only `int64`'s.
                    ("requestedAmount" | "minRevision", Schema::Object(n)) => {
                        n.format = None;
                        n.maximum = Some(utoipa::Number::UInt(usize::MAX));
                    }
                    ("defaultTimeLimitation", Schema::Object(n)) => {
                        n.format = None;
                        n.maximum = Some(utoipa::Number::Float(f64::from(u32::MAX)));
                    }
                    (_, property) => declare_properties_of(property),
                }
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                declare_properties(items);
            }
        }
        Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(declare_properties),
        Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(declare_properties),
        Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(declare_properties),
        _ => {}
    }
}

/// `schema` and one of: "`field` is given and not null", for each field.
fn require_exactly_one(schema: &mut RefOr<Schema>, fields: &[&str]) {
    let not_null = || {
        ObjectBuilder::new().schema_type(SchemaType::Array(vec![
            Type::String,
            Type::Object,
            Type::Array,
            Type::Boolean,
            Type::Number,
        ]))
    };
    let mut choice = OneOfBuilder::new();
    for field in fields {
        choice = choice.item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property(*field, not_null())
                .required(*field),
        );
    }
    let body = std::mem::replace(schema, RefOr::T(Schema::default()));
    *schema = AllOfBuilder::new().item(body).item(choice).into();
}

/// A create body's rule between fields: a merge policy only on a `max_count` feature.
fn merge_policy_needs_max_count() -> Schema {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property(
                    "type",
                    ObjectBuilder::new().enum_values(Some(["max_count"])),
                )
                .required("type"),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property("mergePolicy", ObjectBuilder::new().schema_type(Type::Null)),
        )
        .build()
        .into()
}

fn uuid() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
}

fn text(pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ID_CHARS))
        .pattern(Some(pattern))
        .into()
}

fn page_size(max: f64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1.0))
        .maximum(Some(max))
        .into()
}

/// Offsets are `u32`: the whole range is accepted, not only `int32`'s.
fn offset() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0.0))
        .maximum(Some(f64::from(u32::MAX)))
        .into()
}

/// Every operation may answer a 4xx (a malformed request, a token refused, a rate limit, a body
/// too large or too slow) and a 5xx (a backing service down, a deadline passed), each in its
/// family's error body. Statuses a route declares itself keep their own description.
fn declare_errors(family: &Family, operation: &mut Operation) {
    let (client, server) = match family {
        Family::Probe => return,
        Family::Api => ("ErrorBody", "ErrorBody"),
        Family::Seed003 => ("SeedError", "SeedError"),
        Family::Seed004 => ("Envelope", "Envelope"),
    };
    for (range, schema, description) in [
        (
            "4XX",
            client,
            "The request was refused: invalid, unauthenticated, forbidden, not found, in \
             conflict, too large or too slow, or rate limited (429 with `Retry-After`)",
        ),
        (
            "5XX",
            server,
            "A backing service is unavailable (503, with `Retry-After` when known) or did not \
             answer in time (504)",
        ),
    ] {
        operation
            .responses
            .responses
            .entry(range.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .into()
            });
    }
}
