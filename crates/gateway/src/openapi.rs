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
/// Rust's `char::is_whitespace` (the services' `trim` and whitespace rules), spelled out for a
/// character class: `\s` means other characters in other regex dialects.
macro_rules! whitespace {
    () => {
        "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    };
}
/// Text that must hold something besides whitespace (Rust's `str::trim`).
const NON_BLANK_PATTERN: &str = concat!("[^", whitespace!(), "]");
/// An alias: 1 to 255 characters, no whitespace or control characters.
const ALIAS_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$";
/// A user ID from the customer's identity provider: opaque, no control characters, not blank.
const USER_ID_PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\x00-\\x1f\\x7f-\\x9f]*$";
/// An account name where leaving it out is allowed (a management create names the account
/// after its ID): empty, or holding something besides whitespace.
const OPTIONAL_NAME_PATTERN: &str = concat!("^$|[^", whitespace!(), "]");
/// `creatorEmail`: empty (unset), or an `@` and no whitespace (`validate_profile_text`).
const EMAIL_PATTERN: &str = concat!("^(?:[^", whitespace!(), "]*@[^", whitespace!(), "]*)?$");
/// A time zone: no whitespace (an IANA name such as `Europe/Paris`), empty to clear.
const TIMEZONE_PATTERN: &str = concat!("^[^", whitespace!(), "]*$");
/// A currency: empty to clear, or three ASCII letters (ISO 4217).
const CURRENCY_PATTERN: &str = "^(?:[A-Za-z]{3})?$";
/// An alias in an account body: empty (unset or cleared), or the alias rule.
const OPTIONAL_ALIAS_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$";
/// Longest free-text account field (`tenant::domain::account::MAX_TEXT_CHARS`).
const MAX_TEXT_CHARS: usize = 2_048;
/// Longest time zone, in characters.
const MAX_TIMEZONE_CHARS: usize = 64;
/// The largest revision there can be (the services' revision counters are signed 64-bit); a
/// larger `minRevision` is refused at once.
const MAX_REVISION: isize = isize::MAX;
/// The operations that take a `minRevision` and may wait for it.
const WAITS_FOR_REVISION: &[&str] = &[
    "/entitlements/api/v1/is-entitled-to",
    "/entitlements/api/v1/is-entitled-to/batch",
    "/entitlements/resources/plans/v1/tenant/{tenantId}",
    "/entitlements/api/v1/accounts/{tenantId}/what-if",
];
/// Longest feature or plan key, in characters.
const MAX_KEY_CHARS: usize = 128;
/// Longest ID of any kind, in characters.
const MAX_ID_CHARS: usize = 255;
/// Largest page size of the account-management lists (`tenant::domain::list`).
const MAX_ACCOUNT_PAGE: f64 = 200.0;
/// Largest page size of the entitlement lists and of a migration's item errors.
const MAX_ENTITLEMENT_PAGE: f64 = 1000.0;
/// Most webhook deliveries a page answers (`app::webhooks::MAX_DELIVERY_PAGE`).
const MAX_DELIVERY_PAGE: f64 = 100.0;

/// Bodies that name their target by exactly one of several fields; the others are absent or
/// `null` (the services refuse none or several with a field error).
const EXACTLY_ONE_OF: &[(&str, &[&str])] = &[
    ("CheckBody", &["feature", "permission", "route"]),
    ("BatchCheckItem", &["feature", "permission", "route"]),
    ("CreateFlagBody", &["featureId", "featureKey"]),
    ("NewEntitlement", &["planId", "planKey"]),
    (
        "WhatIfChangeBody",
        &["grant", "revokePlan", "revokeGrantId"],
    ),
    ("WhatIfGrant", &["planId", "planKey"]),
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
    /// OFREP (`/ofrep/…`): `crate::ofrep::ErrorBody`.
    Ofrep,
}

fn family(path: &str) -> Family {
    if path.starts_with("/v1/entitlements/") {
        Family::Seed003
    } else if path.starts_with("/tenants/{tenant_id}/") {
        Family::Seed004
    } else if path.starts_with("/ofrep/") {
        Family::Ofrep
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
            declare_account_rules(components);
            if let Some(schema) = components.schemas.get_mut("Condition") {
                declare_condition_values(schema);
            }
            // A v2 feature's permissions: none twice (the service refuses a key listed twice,
            // whatever its `permissionId`; a schema can state only whole objects).
            for name in ["CreateFeatureV2", "UpdateFeatureV2"] {
                if let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(name)
                    && let Some(RefOr::T(Schema::Array(permissions))) =
                        body.properties.get_mut("permissions")
                {
                    permissions.unique_items = true;
                    permissions.description = Some("Each `permissionKey` at most once.".to_owned());
                }
            }
            for (name, fields) in EXACTLY_ONE_OF {
                if let Some(schema) = components.schemas.get_mut(*name) {
                    require_exactly_one(schema, fields);
                }
            }
            for name in ["CreateFeatureV1", "CreateFeatureV2"] {
                if let Some(schema) = components.schemas.get_mut(name) {
                    let body = std::mem::replace(schema, RefOr::T(Schema::default()));
                    *schema = AllOfBuilder::new()
                        .item(body)
                        .item(merge_policy_needs_a_count())
                        .item(metering_exactly_when_metered())
                        .into();
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
                if WAITS_FOR_REVISION.contains(&path.as_str()) {
                    declare_revision_wait(operation);
                }
                if path == "/tenants/resources/account-settings/v1"
                    && operation.request_body.is_some()
                {
                    require_a_setting(operation);
                }
                declare_errors(&family, operation);
            }
        }
    }
}

fn declare_parameters(path: &str, operation: &mut Operation) {
    let migrations = path.starts_with("/tenants/resources/migrations/");
    let webhooks = path.starts_with("/entitlements/api/v1/webhooks");
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        let name = parameter.name.as_str();
        let schema = match parameter.parameter_in {
            ParameterIn::Path => match name {
                "id" | "planId" | "featureId" | "flagId" | "routeId" | "webhookId"
                | "deliveryId" | "creditGrantId" | "reservationId" => uuid(),
                "tenantId" | "tenant_id" => text(TENANT_ID_PATTERN),
                "userId" | "user_id" => text(USER_ID_PATTERN),
                "alias" => text(ALIAS_PATTERN),
                _ => continue,
            },
            ParameterIn::Query => match name {
                "planId" => uuid(),
                "tenantId" if path.starts_with("/entitlements/api/v1/credit-grants") => {
                    text(TENANT_ID_PATTERN)
                }
                // A delivery page's cursor is the last delivery's ID.
                "cursor" if webhooks => uuid(),
                "limit" if webhooks => page_size(MAX_DELIVERY_PAGE),
                "_limit" if !migrations => page_size(MAX_ACCOUNT_PAGE),
                "_limit" | "limit" => page_size(MAX_ENTITLEMENT_PAGE),
                "_offset" | "offset" => offset(),
                "metadata" if path == "/tenants/resources/tenants/v2" => metadata_matches(),
                "minRevision" => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0.0))
                    .maximum(Some(utoipa::Number::Int(MAX_REVISION)))
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

/// The account bodies' fields as the tenant service checks them
/// (`tenant::domain::account`): `(property, pattern, minLength, maxLength)`.
fn account_field_rules(
    name_pattern: &'static str,
) -> [(&'static str, &'static str, usize, usize); 15] {
    const ANY: &str = "";
    [
        (
            "name",
            name_pattern,
            usize::from(name_pattern == NON_BLANK_PATTERN),
            MAX_ID_CHARS,
        ),
        ("alias", OPTIONAL_ALIAS_PATTERN, 0, MAX_ID_CHARS),
        ("status", ANY, 0, MAX_TEXT_CHARS),
        ("creatorName", ANY, 0, MAX_TEXT_CHARS),
        ("creatorEmail", EMAIL_PATTERN, 0, MAX_TEXT_CHARS),
        ("timezone", TIMEZONE_PATTERN, 0, MAX_TIMEZONE_CHARS),
        ("currency", CURRENCY_PATTERN, 0, 3),
        ("logo", ANY, 0, tenantry_common::limits::MAX_LOGO_BYTES),
        ("logoUrl", ANY, 0, MAX_TEXT_CHARS),
        ("applicationUrl", ANY, 0, MAX_TEXT_CHARS),
        ("website", ANY, 0, MAX_TEXT_CHARS),
        ("address", ANY, 0, MAX_TEXT_CHARS),
        ("dateFormat", ANY, 0, MAX_TEXT_CHARS),
        ("timeFormat", ANY, 0, MAX_TEXT_CHARS),
        ("locale", ANY, 0, MAX_TEXT_CHARS),
    ]
}

/// The account fields an account update changes (the others of its body are taken as read
/// and ignored): at least one must be given.
const ACCOUNT_UPDATE_FIELDS: &[&str] = &[
    "name",
    "status",
    "website",
    "applicationUrl",
    "logo",
    "logoUrl",
    "address",
    "timezone",
    "currency",
    "creatorName",
    "creatorEmail",
    "isReseller",
    "alias",
];

/// The fields of an account as read that an account update ignores.
const UPDATE_IGNORED_FIELDS: &[&str] = &[
    "parentTenantId",
    "metadata",
    "dateFormat",
    "timeFormat",
    "locale",
    "createdAt",
    "updatedAt",
];

/// The account settings fields; an update gives at least one.
const SETTINGS_FIELDS: &[&str] = &[
    "timezone",
    "dateFormat",
    "timeFormat",
    "currency",
    "address",
    "logo",
    "logoUrl",
    "applicationUrl",
    "website",
    "locale",
];

fn declare_account_rules(components: &mut utoipa::openapi::Components) {
    for (schema, name_pattern) in [
        // A management create may leave the name out (named after the ID); a sub-account
        // needs one; an update that gives one cannot blank it.
        ("CreateTenantBody", OPTIONAL_NAME_PATTERN),
        ("CreateSubTenantBody", NON_BLANK_PATTERN),
        ("UpdateTenantBody", NON_BLANK_PATTERN),
        ("AccountSettings", NON_BLANK_PATTERN),
    ] {
        let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut(schema) else {
            continue;
        };
        for (property, pattern, min, max) in account_field_rules(name_pattern) {
            if let Some(RefOr::T(Schema::Object(field))) = body.properties.get_mut(property) {
                if !pattern.is_empty() {
                    field.pattern = Some(pattern.to_owned());
                }
                field.min_length = (min > 0).then_some(min);
                field.max_length = Some(max);
            }
        }
        if schema == "UpdateTenantBody" {
            // The server's value, sent back as read: only the path's account is accepted
            // (an account's ID cannot change), so a client does not send another.
            if let Some(RefOr::T(Schema::Object(id))) = body.properties.get_mut("tenantId") {
                id.read_only = Some(true);
            }
            // Fields other routes (or the server) own, taken as read and ignored: any value.
            for property in UPDATE_IGNORED_FIELDS {
                if let Some(RefOr::T(Schema::Object(field))) = body.properties.get_mut(*property) {
                    let description = field.description.take();
                    *field = ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .description(description)
                        .build();
                }
            }
        }
    }
    if let Some(schema) = components.schemas.get_mut("UpdateTenantBody") {
        require_any(schema, ACCOUNT_UPDATE_FIELDS);
    }
}

/// The settings update's body: the settings, at least one given (the same schema answers
/// reads, where none may be set).
fn require_a_setting(operation: &mut Operation) {
    let Some(RefOr::T(body)) = operation.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        if let RefOr::T(content) = content
            && let Some(schema) = content.schema.as_mut()
        {
            require_any(schema, SETTINGS_FIELDS);
        }
    }
}

/// A targeting condition's `value` by its `op` (`entitlement::domain::condition::compile`).
/// Not stated here: a `matches` regex must compile (Rust `regex` syntax) and a `between_*`
/// start must not be after its end.
fn declare_condition_values(schema: &mut RefOr<Schema>) {
    let object = |fields: &[(&str, RefOr<Schema>)]| {
        let mut value = ObjectBuilder::new().schema_type(Type::Object);
        for (name, field) in fields {
            value = value.property(*name, field.clone()).required(*name);
        }
        value
    };
    let of_type = |kind: Type| -> RefOr<Schema> { ObjectBuilder::new().schema_type(kind).into() };
    let formatted = |format: KnownFormat| -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
            .into()
    };
    let date: RefOr<Schema> = AnyOfBuilder::new()
        .item(formatted(KnownFormat::Date))
        .item(formatted(KnownFormat::DateTime))
        .into();
    let strings: RefOr<Schema> = utoipa::openapi::ArrayBuilder::new()
        .items(of_type(Type::String))
        .into();
    let number = of_type(Type::Number);
    let variants: [(&[&str], ObjectBuilder); 7] = [
        (
            &["in_list", "starts_with", "ends_with", "contains"],
            object(&[("list", strings)]),
        ),
        (&["matches"], object(&[("string", of_type(Type::String))])),
        (
            &[
                "equal",
                "greater_than",
                "greater_than_equal",
                "lower_than",
                "lower_than_equal",
            ],
            object(&[("number", number.clone())]),
        ),
        (
            &["between_numeric"],
            object(&[("start", number.clone()), ("end", number)]),
        ),
        (&["is"], object(&[("boolean", of_type(Type::Boolean))])),
        (
            &["on", "on_or_after", "on_or_before"],
            object(&[("date", date.clone())]),
        ),
        (
            &["between_date"],
            object(&[("start", date.clone()), ("end", date)]),
        ),
    ];
    let mut choice = OneOfBuilder::new();
    for (ops, value) in variants {
        choice = choice.item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property(
                    "op",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(ops.iter().copied())),
                )
                .property("value", value)
                .required("op")
                .required("value"),
        );
    }
    let condition = std::mem::replace(schema, RefOr::T(Schema::default()));
    *schema = AllOfBuilder::new().item(condition).item(choice).into();
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
                    // `u64` on the wire: the whole range, not only `int64`'s (a what-if's is a
                    // consumption's amount and states its own range).
                    ("requestedAmount", Schema::Object(n)) if n.maximum.is_none() => {
                        n.format = None;
                        n.maximum = Some(utoipa::Number::UInt(usize::MAX));
                    }
                    ("minRevision", Schema::Object(n)) => {
                        n.format = None;
                        n.minimum = Some(utoipa::Number::Int(0));
                        n.maximum = Some(utoipa::Number::Int(MAX_REVISION));
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

/// "`field` is given and not null".
fn given(field: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .property(
            field,
            ObjectBuilder::new().schema_type(SchemaType::Array(vec![
                Type::String,
                Type::Object,
                Type::Array,
                Type::Boolean,
                Type::Number,
            ])),
        )
        .required(field)
}

/// `schema` and one of: "`field` is given and not null", for each field.
fn require_exactly_one(schema: &mut RefOr<Schema>, fields: &[&str]) {
    let mut choice = OneOfBuilder::new();
    for field in fields {
        choice = choice.item(given(field));
    }
    let body = std::mem::replace(schema, RefOr::T(Schema::default()));
    *schema = AllOfBuilder::new().item(body).item(choice).into();
}

/// `schema` and at least one of `fields` given and not null.
fn require_any(schema: &mut RefOr<Schema>, fields: &[&str]) {
    let mut choice = AnyOfBuilder::new();
    for field in fields {
        choice = choice.item(given(field));
    }
    let body = std::mem::replace(schema, RefOr::T(Schema::default()));
    *schema = AllOfBuilder::new().item(body).item(choice).into();
}

/// A create body's rule between fields: a merge policy only on a `max_count` feature.
/// A create's `mergePolicy` needs a counted `type` (`max_count`, `metered`).
fn merge_policy_needs_a_count() -> Schema {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["max_count", "metered"])),
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

/// A create's `metering` is given exactly when its `type` is `metered`.
fn metering_exactly_when_metered() -> Schema {
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["metered"])),
                )
                .property("metering", ObjectBuilder::new().schema_type(Type::Object))
                .required("type")
                .required("metering"),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::AnyValue)
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                        .enum_values(Some([
                            serde_json::Value::from("bool"),
                            serde_json::Value::from("max_count"),
                            serde_json::Value::Null,
                        ])),
                )
                .property("metering", ObjectBuilder::new().schema_type(Type::Null)),
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

/// The accounts list's `metadata=key:value` pairs (`tenant::domain::list`): at most 10; a key
/// of 1-256 characters without `:`, a value of up to 1,024, neither with control characters.
fn metadata_matches() -> RefOr<Schema> {
    let pair = ObjectBuilder::new().schema_type(Type::String).pattern(Some(
        "^[^:\\x00-\\x1f\\x7f-\\x9f]{1,256}:[^\\x00-\\x1f\\x7f-\\x9f]{0,1024}$",
    ));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(pair)
        .max_items(Some(10))
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

/// A read with `minRevision` waits (at most 2 s) only while the replica's waiting room has
/// room; the 503s it may answer, and when to retry.
fn declare_revision_wait(operation: &mut Operation) {
    let response = ResponseBuilder::new()
        .description(
            "`minRevision` is not reached: too many requests already wait for a revision this \
             replica has not reached (`reason: REVISION_WAITERS_FULL`, refused at once, \
             `Retry-After: 1`), or the index did not reach it within 2 s (`reason: UNAVAILABLE`)",
        )
        .header(
            "Retry-After",
            utoipa::openapi::HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0.0)),
                ))
                .description(Some(
                    "Seconds to wait before retrying (with `REVISION_WAITERS_FULL`)",
                ))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .insert("503".to_owned(), response.into());
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
        Family::Ofrep => ("OfrepErrorBody", "OfrepErrorBody"),
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
