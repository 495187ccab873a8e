//! Domain ⇄ protobuf conversions.

use chrono::{DateTime, Utc};
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue, value::Kind};
use serde_json::{Map, Number, Value};
use tenantry_proto::{common::v1::PageInfo, tenant::v1 as pb};
use tonic::Status;

use super::invalid;
use crate::domain::{
    Account, AccountState, ChangeDetail, ChangeEvent, ChangeKind, FeedEntry, HierarchyEntry,
    Membership, Migration, MigrationState, NewAccount, Page, PublicSettings, Settings,
    SubAccountAccessType, TreeNode,
};

pub(super) fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

// --- JSON ⇄ google.protobuf.Struct ------------------------------------------------------------

pub(super) fn json_to_pb(value: &Value) -> PbValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_pb).collect(),
        }),
        Value::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    PbValue { kind: Some(kind) }
}

pub(super) fn map_to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_pb(v)))
            .collect(),
    }
}

/// protobuf numbers are doubles: integral ones come back as JSON integers (so `50` stays `50`);
/// NaN and infinities have no JSON form and are refused.
pub(super) fn pb_to_json(field: &str, value: PbValue) -> Result<Value, Status> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            if !n.is_finite() {
                return Err(invalid(field, "numbers must be finite"));
            }
            // 2^53: beyond it doubles are not exact integers anyway.
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                #[allow(clippy::cast_possible_truncation)]
                Value::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| pb_to_json(field, v))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(field, s)?),
    })
}

pub(super) fn struct_to_map(field: &str, s: Struct) -> Result<Map<String, Value>, Status> {
    s.fields
        .into_iter()
        .map(|(k, v)| Ok((k, pb_to_json(field, v)?)))
        .collect()
}

// --- accounts ---------------------------------------------------------------------------------

pub(super) fn settings(s: &Settings) -> pb::AccountSettings {
    pb::AccountSettings {
        timezone: s.timezone.clone(),
        date_format: s.date_format.clone(),
        time_format: s.time_format.clone(),
        currency: s.currency.clone(),
        address: s.address.clone(),
        logo: s.logo.clone(),
        logo_url: s.logo_url.clone(),
        application_url: s.application_url.clone(),
        website: s.website.clone(),
        locale: s.locale.clone(),
    }
}

pub(super) fn settings_from(s: pb::AccountSettings) -> Settings {
    Settings {
        timezone: s.timezone,
        date_format: s.date_format,
        time_format: s.time_format,
        currency: s.currency,
        address: s.address,
        logo: s.logo,
        logo_url: s.logo_url,
        application_url: s.application_url,
        website: s.website,
        locale: s.locale,
    }
}

pub(super) fn account(a: &Account) -> pb::Account {
    let s = &a.settings;
    pb::Account {
        tenant_id: a.tenant_id.clone(),
        name: a.name.clone(),
        status: a.status.clone(),
        website: s.website.clone(),
        application_url: s.application_url.clone(),
        logo: s.logo.clone(),
        logo_url: s.logo_url.clone(),
        address: s.address.clone(),
        timezone: s.timezone.clone(),
        currency: s.currency.clone(),
        creator_name: a.creator_name.clone(),
        creator_email: a.creator_email.clone(),
        is_reseller: a.is_reseller,
        parent_tenant_id: a.parent_tenant_id.clone(),
        alias: a.alias.clone(),
        metadata: Some(map_to_struct(&a.metadata)),
        settings: Some(settings(s)),
        created_at: Some(timestamp(a.created_at)),
        updated_at: Some(timestamp(a.updated_at)),
    }
}

/// A NewAccount message as domain input (not yet validated). Profile fields that are also
/// settings win over the same field in `settings`.
pub(super) fn new_account(prefix: &str, n: pb::NewAccount) -> Result<NewAccount, Status> {
    let mut settings = n.settings.map(settings_from).unwrap_or_default();
    for (slot, value) in [
        (&mut settings.timezone, n.timezone),
        (&mut settings.currency, n.currency),
        (&mut settings.address, n.address),
        (&mut settings.logo, n.logo),
        (&mut settings.logo_url, n.logo_url),
        (&mut settings.application_url, n.application_url),
        (&mut settings.website, n.website),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    let metadata = match n.metadata {
        Some(s) => Some(struct_to_map(&format!("{prefix}metadata"), s)?),
        None => None,
    };
    Ok(NewAccount {
        tenant_id: n.tenant_id,
        name: n.name,
        status: n.status,
        creator_name: n.creator_name,
        creator_email: n.creator_email,
        is_reseller: n.is_reseller,
        parent_tenant_id: n.parent_tenant_id,
        alias: n.alias,
        metadata,
        settings,
    })
}

pub(super) fn public_settings(p: PublicSettings) -> pb::PublicAccountSettings {
    pb::PublicAccountSettings {
        tenant_id: p.tenant_id,
        name: p.name,
        logo: p.logo,
        logo_url: p.logo_url,
        application_url: p.application_url,
        timezone: p.timezone,
        date_format: p.date_format,
        time_format: p.time_format,
        locale: p.locale,
    }
}

pub(super) fn access_type(a: SubAccountAccessType) -> pb::SubAccountAccessType {
    match a {
        SubAccountAccessType::DefaultOff => pb::SubAccountAccessType::DefaultOff,
        SubAccountAccessType::DefaultOn => pb::SubAccountAccessType::DefaultOn,
        SubAccountAccessType::AlwaysOn => pb::SubAccountAccessType::AlwaysOn,
    }
}

pub(super) fn access_type_from(field: &str, value: i32) -> Result<SubAccountAccessType, Status> {
    match pb::SubAccountAccessType::try_from(value) {
        Ok(pb::SubAccountAccessType::DefaultOff) => Ok(SubAccountAccessType::DefaultOff),
        Ok(pb::SubAccountAccessType::DefaultOn) => Ok(SubAccountAccessType::DefaultOn),
        Ok(pb::SubAccountAccessType::AlwaysOn) => Ok(SubAccountAccessType::AlwaysOn),
        Ok(pb::SubAccountAccessType::Unspecified) | Err(_) => Err(invalid(
            field,
            "must be one of defaultOff, defaultOn or alwaysOn",
        )),
    }
}

pub(super) fn hierarchy_settings(a: &Account) -> pb::HierarchySettings {
    pb::HierarchySettings {
        tenant_id: a.tenant_id.clone(),
        sub_account_access_type: access_type(a.sub_account_access_type).into(),
    }
}

pub(super) fn hierarchy_entry(e: &HierarchyEntry) -> pb::HierarchyEntry {
    pb::HierarchyEntry {
        account: Some(account(&e.account)),
        depth: e.depth,
    }
}

pub(super) fn tree(node: &TreeNode) -> pb::HierarchyTreeNode {
    pb::HierarchyTreeNode {
        account: Some(account(&node.account)),
        children: node.children.iter().map(tree).collect(),
    }
}

pub(super) fn membership(m: &Membership) -> pb::Membership {
    pb::Membership {
        tenant_id: m.tenant_id.clone(),
        user_id: m.user_id.clone(),
        created_at: Some(timestamp(m.created_at)),
    }
}

pub(super) fn page_info<T>(page: &Page<T>) -> PageInfo {
    PageInfo {
        total_items: page.total,
        total_pages: page.total_pages(),
        has_next: page.has_next(),
    }
}

// --- change feed ------------------------------------------------------------------------------

pub(super) fn change_type(kind: ChangeKind) -> pb::ChangeType {
    match kind {
        ChangeKind::Created => pb::ChangeType::Created,
        ChangeKind::Updated => pb::ChangeType::Updated,
        ChangeKind::Deleted => pb::ChangeType::Deleted,
        ChangeKind::Reactivated => pb::ChangeType::Reactivated,
        ChangeKind::Metadata => pb::ChangeType::Metadata,
        ChangeKind::Hierarchy => pb::ChangeType::Hierarchy,
        ChangeKind::Membership => pb::ChangeType::Membership,
        ChangeKind::MigrationFinished => pb::ChangeType::MigrationFinished,
    }
}

pub(super) fn change_kind_from(field: &str, value: i32) -> Result<ChangeKind, Status> {
    match pb::ChangeType::try_from(value) {
        Ok(pb::ChangeType::Created) => Ok(ChangeKind::Created),
        Ok(pb::ChangeType::Updated) => Ok(ChangeKind::Updated),
        Ok(pb::ChangeType::Deleted) => Ok(ChangeKind::Deleted),
        Ok(pb::ChangeType::Reactivated) => Ok(ChangeKind::Reactivated),
        Ok(pb::ChangeType::Metadata) => Ok(ChangeKind::Metadata),
        Ok(pb::ChangeType::Hierarchy) => Ok(ChangeKind::Hierarchy),
        Ok(pb::ChangeType::Membership) => Ok(ChangeKind::Membership),
        Ok(pb::ChangeType::MigrationFinished) => Ok(ChangeKind::MigrationFinished),
        Ok(pb::ChangeType::Unspecified) | Err(_) => {
            Err(invalid(field, format!("{value} is not a change type")))
        }
    }
}

pub(super) fn change_event(e: &ChangeEvent) -> pb::ChangeEvent {
    let c = match &e.entry {
        FeedEntry::Account(c) => c,
        FeedEntry::MigrationFinished(m) => {
            return pb::ChangeEvent {
                sequence: e.sequence,
                change_type: pb::ChangeType::MigrationFinished.into(),
                tenant_id: String::new(),
                occurred_at: Some(timestamp(e.occurred_at)),
                account: None,
                detail: Some(pb::change_event::Detail::Migration(migration(m))),
                changed_fields: Vec::new(),
            };
        }
    };
    let detail = match &c.detail {
        ChangeDetail::None => None,
        ChangeDetail::Hierarchy {
            old_parent,
            new_parent,
        } => Some(pb::change_event::Detail::Hierarchy(pb::HierarchyChange {
            old_parent_tenant_id: old_parent.clone(),
            new_parent_tenant_id: new_parent.clone(),
        })),
        ChangeDetail::Membership { user_id, added } => {
            Some(pb::change_event::Detail::Membership(pb::MembershipChange {
                user_id: user_id.clone(),
                added: *added,
            }))
        }
    };
    // The stored account has no metadata (events leave it out): send none rather than `{}`.
    let account = pb::Account {
        metadata: None,
        ..account(&c.account)
    };
    pb::ChangeEvent {
        sequence: e.sequence,
        change_type: change_type(c.kind).into(),
        tenant_id: c.tenant_id.clone(),
        occurred_at: Some(timestamp(e.occurred_at)),
        account: Some(account),
        detail,
        changed_fields: c.changed_fields.clone(),
    }
}

pub(super) fn account_state(a: &AccountState) -> pb::AccountState {
    pb::AccountState {
        tenant_id: a.tenant_id.clone(),
        parent_tenant_id: a.parent_tenant_id.clone(),
        created_at: Some(timestamp(a.created_at)),
    }
}

// --- migrations -------------------------------------------------------------------------------

pub(super) fn migration(m: &Migration) -> pb::Migration {
    let state = match m.state {
        MigrationState::Pending => pb::MigrationState::Pending,
        MigrationState::Running => pb::MigrationState::Running,
        MigrationState::Completed => pb::MigrationState::Completed,
        MigrationState::Failed => pb::MigrationState::Failed,
    };
    pb::Migration {
        migration_id: m.id.clone(),
        state: state.into(),
        total_items: m.total_items,
        processed_items: m.processed_items,
        created_items: m.created_items,
        skipped_items: m.skipped_items,
        failed_items: m.failed_items,
        failure_message: m.failure_message.clone(),
        created_at: Some(timestamp(m.created_at)),
        started_at: m.started_at.map(timestamp),
        finished_at: m.finished_at.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_round_trip_through_struct() {
        let value = json!({"n": 50, "f": 1.5, "s": "x", "l": [true, null], "o": {"k": -3}});
        let Value::Object(map) = value.clone() else {
            unreachable!("literal is an object")
        };
        let back = struct_to_map("m", map_to_struct(&map)).unwrap();
        assert_eq!(Value::Object(back), value);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let v = PbValue {
            kind: Some(Kind::NumberValue(f64::NAN)),
        };
        assert_eq!(
            pb_to_json("metadata", v).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
