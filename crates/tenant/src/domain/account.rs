//! Accounts: their fields, validation, updates, metadata and settings.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{Error, Result};

/// Longest tenant ID, alias, user ID or name.
pub const MAX_ID_CHARS: usize = 255;
/// Longest free-text profile field.
pub const MAX_TEXT_CHARS: usize = 2_048;
/// Largest logo (a base64 data URL or a URL): every change event carries it.
pub const MAX_LOGO_BYTES: usize = tenantry_common::limits::MAX_LOGO_BYTES;
/// Largest serialized metadata object.
pub const MAX_METADATA_BYTES: usize = tenantry_common::limits::METADATA.max_bytes;
/// Permission the self-service "delete current account" requires.
pub const DELETE_ACCOUNT_PERMISSION: &str = "fe.account-settings.delete.account";

/// Settings of an account. Several are also profile fields of the account (one stored value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub timezone: Option<String>,
    pub date_format: Option<String>,
    pub time_format: Option<String>,
    pub currency: Option<String>,
    pub address: Option<String>,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub application_url: Option<String>,
    pub website: Option<String>,
    pub locale: Option<String>,
}

impl Settings {
    fn fields(&self) -> [(&'static str, &Option<String>); 10] {
        [
            ("timezone", &self.timezone),
            ("date_format", &self.date_format),
            ("time_format", &self.time_format),
            ("currency", &self.currency),
            ("address", &self.address),
            ("logo", &self.logo),
            ("logo_url", &self.logo_url),
            ("application_url", &self.application_url),
            ("website", &self.website),
            ("locale", &self.locale),
        ]
    }

    fn fields_mut(&mut self) -> [(&'static str, &mut Option<String>); 10] {
        [
            ("timezone", &mut self.timezone),
            ("date_format", &mut self.date_format),
            ("time_format", &mut self.time_format),
            ("currency", &mut self.currency),
            ("address", &mut self.address),
            ("logo", &mut self.logo),
            ("logo_url", &mut self.logo_url),
            ("application_url", &mut self.application_url),
            ("website", &mut self.website),
            ("locale", &mut self.locale),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    /// A copy without the logo, which is never copied (it may be a megabyte).
    pub fn clone_without_logo(&self) -> Self {
        let mut copy = Self::default();
        for ((name, slot), (_, value)) in copy.fields_mut().into_iter().zip(self.fields()) {
            if name != "logo" {
                slot.clone_from(value);
            }
        }
        copy
    }

    /// The names of the fields whose values differ between `self` and `other`.
    pub fn changed_fields<'a>(
        &'a self,
        other: &'a Settings,
    ) -> impl Iterator<Item = &'static str> + 'a {
        self.fields()
            .into_iter()
            .zip(other.fields())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((name, _), _)| name)
    }

    /// Checks every set value; `prefix` names the message field in errors.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        for (name, value) in self.fields() {
            let Some(value) = value else { continue };
            let field = format!("{prefix}{name}");
            match name {
                "logo" => check_len(&field, value, MAX_LOGO_BYTES)?,
                "timezone" => {
                    check_len(&field, value, 64)?;
                    if !value.is_empty() && value.chars().any(char::is_whitespace) {
                        return Err(Error::invalid(
                            field,
                            "must be an IANA time zone such as `Europe/Paris` (no spaces)",
                        ));
                    }
                }
                "currency" => {
                    let iso_code =
                        value.len() == 3 && value.chars().all(|c| c.is_ascii_alphabetic());
                    if !(value.is_empty() || iso_code) {
                        return Err(Error::invalid(
                            field,
                            "must be a three-letter ISO 4217 code such as `EUR`",
                        ));
                    }
                }
                _ => check_len(&field, value, MAX_TEXT_CHARS)?,
            }
        }
        Ok(())
    }

    /// Applies a patch (set fields written, `""` clears); returns whether anything changed.
    pub fn apply(&mut self, patch: &Settings) -> bool {
        let mut changed = false;
        for ((_, current), (_, new)) in self.fields_mut().into_iter().zip(patch.fields()) {
            if let Some(new) = new {
                let new = non_empty(new);
                if *current != new {
                    *current = new;
                    changed = true;
                }
            }
        }
        changed
    }

    /// `""` means "unset" on creation.
    pub fn normalized(mut self) -> Self {
        for (_, value) in self.fields_mut() {
            if value.as_deref() == Some("") {
                *value = None;
            }
        }
        self
    }
}

/// The subset of an account that is safe to show unauthenticated users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicSettings {
    pub tenant_id: String,
    pub name: String,
    pub logo: Option<String>,
    pub logo_url: Option<String>,
    pub application_url: Option<String>,
    pub timezone: Option<String>,
    pub date_format: Option<String>,
    pub time_format: Option<String>,
    pub locale: Option<String>,
}

/// The result of creating an account (also the answer an idempotency key replays).
#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    pub account: Account,
    pub reactivated: bool,
}

/// The result of deleting an account.
#[derive(Debug)]
pub struct Deleted {
    pub account: Account,
    pub reparented: Vec<String>,
    pub removed_memberships: u64,
}

/// What creating an account does with the ID of a deleted one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletedIds {
    /// Reactivate it (management creates and imports: the vendor restores its customer; the
    /// grants its deletion revoked stay revoked).
    Reactivate,
    /// Treat it as taken, with the very answer a live account gets: sub-account creation,
    /// where a user must neither reclaim another tenant's deleted account (its history, its
    /// place in audit trails) nor learn that it was deleted.
    Reserved,
}

/// How users of an account reach its sub-accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubAccountAccessType {
    #[default]
    DefaultOff,
    DefaultOn,
    AlwaysOn,
}

impl SubAccountAccessType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DefaultOff => "defaultOff",
            Self::DefaultOn => "defaultOn",
            Self::AlwaysOn => "alwaysOn",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "defaultOff" => Some(Self::DefaultOff),
            "defaultOn" => Some(Self::DefaultOn),
            "alwaysOn" => Some(Self::AlwaysOn),
            _ => None,
        }
    }

    /// The tenant-scope rule: whether users of an account with these settings reach its
    /// sub-accounts (at any depth). `defaultOff` keeps them to their own account.
    pub fn opens_sub_accounts(self) -> bool {
        match self {
            Self::DefaultOn | Self::AlwaysOn => true,
            Self::DefaultOff => false,
        }
    }
}

/// A live account as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub tenant_id: String,
    pub name: String,
    pub status: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: bool,
    pub parent_tenant_id: Option<String>,
    pub alias: Option<String>,
    pub metadata: Map<String, Value>,
    pub settings: Settings,
    pub sub_account_access_type: SubAccountAccessType,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Account {
    pub fn public_settings(&self) -> PublicSettings {
        PublicSettings {
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            logo: self.settings.logo.clone(),
            logo_url: self.settings.logo_url.clone(),
            application_url: self.settings.application_url.clone(),
            timezone: self.settings.timezone.clone(),
            date_format: self.settings.date_format.clone(),
            time_format: self.settings.time_format.clone(),
            locale: self.settings.locale.clone(),
        }
    }

    /// A new account from validated input (ID already decided).
    /// A new account; one created without a name is named after its ID.
    pub fn from_new(tenant_id: String, new: &NewAccount, at: DateTime<Utc>) -> Self {
        let name = if new.name.is_empty() {
            tenant_id.clone()
        } else {
            new.name.clone()
        };
        Self {
            tenant_id,
            name,
            status: new.status.clone(),
            creator_name: new.creator_name.clone(),
            creator_email: new.creator_email.clone(),
            is_reseller: new.is_reseller.unwrap_or(false),
            parent_tenant_id: None,
            alias: new.alias.clone(),
            metadata: new.metadata.clone().unwrap_or_default(),
            settings: new.settings.clone(),
            sub_account_access_type: SubAccountAccessType::default(),
            created_at: at,
            updated_at: at,
        }
    }

    /// Which fields `new` sets to a different value than this account has (migrations'
    /// idempotency check: an identical account is skipped, a differing one reported).
    pub fn differences(&self, new: &NewAccount) -> Vec<&'static str> {
        let mut diff = Vec::new();
        if self.name != new.name {
            diff.push("name");
        }
        let pairs: [(&'static str, &Option<String>, &Option<String>); 5] = [
            ("status", &self.status, &new.status),
            ("creator_name", &self.creator_name, &new.creator_name),
            ("creator_email", &self.creator_email, &new.creator_email),
            ("alias", &self.alias, &new.alias),
            (
                "parent_tenant_id",
                &self.parent_tenant_id,
                &new.parent_tenant_id,
            ),
        ];
        for (name, current, wanted) in pairs {
            if wanted.is_some() && current != wanted {
                diff.push(name);
            }
        }
        if new.is_reseller.is_some_and(|r| r != self.is_reseller) {
            diff.push("is_reseller");
        }
        if new.metadata.as_ref().is_some_and(|m| *m != self.metadata) {
            diff.push("metadata");
        }
        for ((name, current), (_, wanted)) in self
            .settings
            .fields()
            .into_iter()
            .zip(new.settings.fields())
        {
            if wanted.is_some() && current != wanted {
                diff.push(name);
            }
        }
        diff
    }
}

/// The fields of an account to create.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewAccount {
    pub tenant_id: Option<String>,
    pub name: String,
    pub status: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: Option<bool>,
    pub parent_tenant_id: Option<String>,
    pub alias: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub settings: Settings,
}

impl NewAccount {
    /// Validates and normalizes (empty optional strings mean unset). `prefix` is the request
    /// path of the message, e.g. `account.`.
    pub fn validated(mut self, prefix: &str, require_id: bool) -> Result<Self> {
        for value in [
            &mut self.tenant_id,
            &mut self.status,
            &mut self.creator_name,
            &mut self.creator_email,
            &mut self.parent_tenant_id,
            &mut self.alias,
        ] {
            if value.as_deref() == Some("") {
                *value = None;
            }
        }
        self.settings = std::mem::take(&mut self.settings).normalized();
        match &self.tenant_id {
            Some(id) => validate_tenant_id(&format!("{prefix}tenant_id"), id)?,
            None if require_id => {
                return Err(Error::invalid(format!("{prefix}tenant_id"), "is required"));
            }
            None => {}
        }
        // The seed's CreateTenantRequest requires no field: a management create without a
        // name is named after its ID (see `Account::from_new`).
        if require_id || !self.name.is_empty() {
            validate_name(&format!("{prefix}name"), &self.name)?;
        }
        if let Some(parent) = &self.parent_tenant_id {
            validate_tenant_id(&format!("{prefix}parent_tenant_id"), parent)?;
        }
        if let Some(alias) = &self.alias {
            validate_alias(&format!("{prefix}alias"), alias)?;
        }
        validate_profile_text(
            prefix,
            &self.status,
            &self.creator_name,
            &self.creator_email,
        )?;
        if let Some(metadata) = &self.metadata {
            check_metadata_size(&format!("{prefix}metadata"), metadata)?;
        }
        self.settings.validate(&format!("{prefix}settings."))?;
        Ok(self)
    }
}

/// A change to an account's profile. `Some("")` clears an optional field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub status: Option<String>,
    pub creator_name: Option<String>,
    pub creator_email: Option<String>,
    pub is_reseller: Option<bool>,
    pub alias: Option<String>,
    pub settings: Settings,
}

impl AccountPatch {
    pub fn validate(&self) -> Result<()> {
        let given = self.name.is_some()
            || self.status.is_some()
            || self.creator_name.is_some()
            || self.creator_email.is_some()
            || self.is_reseller.is_some()
            || self.alias.is_some()
            || !self.settings.is_empty();
        if !given {
            return Err(Error::invalid(
                "tenant_id",
                "the update sets no field: give at least one field to change",
            ));
        }
        if let Some(name) = &self.name {
            validate_name("name", name)?;
        }
        if let Some(alias) = self.alias.as_deref().filter(|a| !a.is_empty()) {
            validate_alias("alias", alias)?;
        }
        validate_profile_text("", &self.status, &self.creator_name, &self.creator_email)?;
        self.settings.validate("")
    }

    /// Applies the patch and says whether it changed anything. An update that changes nothing
    /// is not an error: a client sending back the account as read (a GET → PUT round trip)
    /// gets it as it is, and nothing is written.
    pub fn apply(&self, account: &mut Account) -> bool {
        let mut changed = false;
        if let Some(name) = &self.name {
            changed |= replace(&mut account.name, name.clone());
        }
        for (current, new) in [
            (&mut account.status, &self.status),
            (&mut account.creator_name, &self.creator_name),
            (&mut account.creator_email, &self.creator_email),
            (&mut account.alias, &self.alias),
        ] {
            if let Some(new) = new {
                changed |= replace(current, non_empty(new));
            }
        }
        if let Some(reseller) = self.is_reseller {
            changed |= replace(&mut account.is_reseller, reseller);
        }
        changed |= account.settings.apply(&self.settings);
        changed
    }
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn check_len(field: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

fn validate_profile_text(
    prefix: &str,
    status: &Option<String>,
    creator_name: &Option<String>,
    creator_email: &Option<String>,
) -> Result<()> {
    for (name, value) in [
        ("status", status),
        ("creator_name", creator_name),
        ("creator_email", creator_email),
    ] {
        if let Some(value) = value {
            check_len(&format!("{prefix}{name}"), value, MAX_TEXT_CHARS)?;
        }
    }
    if let Some(email) = creator_email.as_deref().filter(|e| !e.is_empty())
        && (!email.contains('@') || email.chars().any(char::is_whitespace))
    {
        return Err(Error::invalid(
            format!("{prefix}creator_email"),
            "must be an email address",
        ));
    }
    Ok(())
}

/// A tenant ID: 1-255 characters, no whitespace, no `/`, no control characters.
pub fn validate_tenant_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    check_len(field, id, MAX_ID_CHARS)?;
    if id
        .chars()
        .any(tenantry_common::ids::is_forbidden_in_tenant_id)
    {
        return Err(Error::invalid(
            field,
            "must not contain whitespace, control characters or `/`",
        ));
    }
    Ok(())
}

pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid(field, "is required and cannot be blank"));
    }
    check_len(field, name, MAX_ID_CHARS)
}

pub fn validate_alias(field: &str, alias: &str) -> Result<()> {
    if alias.is_empty() {
        return Err(Error::invalid(field, "cannot be empty"));
    }
    check_len(field, alias, MAX_ID_CHARS)?;
    if alias.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(field, "must not contain whitespace"));
    }
    Ok(())
}

/// A user ID from the customer's identity provider: opaque, 1-255 characters, not blank.
pub fn validate_user_id(field: &str, user_id: &str) -> Result<()> {
    if user_id.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    check_len(field, user_id, MAX_ID_CHARS)?;
    if user_id.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Size, keys and depth: deep metadata would not survive protobuf decoding in the change feed.
fn check_metadata_size(field: &str, metadata: &Map<String, Value>) -> Result<()> {
    // The limits walk a `Value`; metadata is small enough (bounded by the body) to clone.
    let value = Value::Object(metadata.clone());
    tenantry_common::limits::check_freeform(&value, &tenantry_common::limits::METADATA)
        .map_err(|problem| Error::invalid(field, problem))
}

/// Metadata to merge: a JSON object, or a string holding one. Anything else is refused with a
/// message saying what was given.
pub fn parse_metadata(field: &str, value: Option<Value>) -> Result<Map<String, Value>> {
    const EXPECTED: &str = "must be a JSON object or a string holding a JSON object";
    let describe = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let object = match value {
        None => return Err(Error::invalid(field, format!("is required: it {EXPECTED}"))),
        Some(Value::Object(map)) => map,
        Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(Error::invalid(
                    field,
                    format!("{EXPECTED}; the string holds {}", describe(&other)),
                ));
            }
            Err(_) => {
                return Err(Error::invalid(
                    field,
                    format!("{EXPECTED}; the string is not valid JSON"),
                ));
            }
        },
        Some(other) => {
            return Err(Error::invalid(
                field,
                format!("{EXPECTED}, not {}", describe(&other)),
            ));
        }
    };
    check_metadata_size(field, &object)?;
    Ok(object)
}

/// Merges `add` into `metadata`, overwriting existing keys; returns whether anything changed.
pub fn merge_metadata(metadata: &mut Map<String, Value>, add: Map<String, Value>) -> Result<bool> {
    let mut changed = false;
    for (key, value) in add {
        if metadata.get(&key) != Some(&value) {
            metadata.insert(key, value);
            changed = true;
        }
    }
    check_metadata_size("metadata", metadata)?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tenant_ids_are_validated() {
        assert!(validate_tenant_id("f", "acme-1").is_ok());
        assert!(validate_tenant_id("f", &"x".repeat(255)).is_ok());
        for bad in ["", "a b", "a/b", "tab\there", &"x".repeat(256)] {
            assert!(validate_tenant_id("f", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn metadata_accepts_objects_and_strings_holding_objects_only() {
        let m = parse_metadata("metadata", Some(json!({"a": 1}))).unwrap();
        assert_eq!(m.get("a"), Some(&json!(1)));
        let m = parse_metadata("metadata", Some(json!("{\"b\": true}"))).unwrap();
        assert_eq!(m.get("b"), Some(&json!(true)));
        for (bad, says) in [
            (json!(5), "not a number"),
            (json!([1]), "not an array"),
            (json!("[1]"), "holds an array"),
            (json!("nope"), "not valid JSON"),
            (Value::Null, "not null"),
        ] {
            let err = parse_metadata("metadata", Some(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains("JSON object") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn merge_overwrites_and_reports_change() {
        let mut m = Map::new();
        m.insert("a".into(), json!(1));
        m.insert("b".into(), json!(2));
        let mut add = Map::new();
        add.insert("b".into(), json!(3));
        add.insert("c".into(), json!(4));
        assert!(merge_metadata(&mut m, add.clone()).unwrap());
        assert_eq!(Value::Object(m.clone()), json!({"a": 1, "b": 3, "c": 4}));
        assert!(!merge_metadata(&mut m, add).unwrap());
    }

    #[test]
    fn patch_refuses_empty_and_no_op_updates() {
        assert!(AccountPatch::default().validate().is_err());
        let mut account = Account::from_new(
            "t".into(),
            &NewAccount {
                name: "Acme".into(),
                ..NewAccount::default()
            },
            crate::domain::now(),
        );
        let same = AccountPatch {
            name: Some("Acme".into()),
            ..AccountPatch::default()
        };
        assert!(!same.apply(&mut account));
        let clear = AccountPatch {
            status: Some(String::new()),
            name: Some("Acme 2".into()),
            ..AccountPatch::default()
        };
        assert!(clear.apply(&mut account));
        assert_eq!(account.name, "Acme 2");
        assert_eq!(account.status, None);
    }
}
