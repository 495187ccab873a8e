//! Rows ⇄ domain types.

use sea_orm::ActiveValue::Set;

use super::entities::accounts;
use crate::domain::{Account, Error, Settings, SubAccountAccessType};

pub(super) fn account_from_row(row: accounts::Model) -> Result<Account, Error> {
    let metadata = match serde_json::from_str::<serde_json::Value>(&row.metadata) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) | Err(_) => {
            return Err(Error::internal(
                format!(
                    "stored metadata of account `{}` is not a JSON object",
                    row.tenant_id
                ),
                "corrupt metadata column",
            ));
        }
    };
    let access = SubAccountAccessType::parse(&row.sub_account_access_type).ok_or_else(|| {
        Error::internal(
            format!(
                "stored access type of account `{}` is unknown",
                row.tenant_id
            ),
            "corrupt sub_account_access_type column",
        )
    })?;
    Ok(Account {
        tenant_id: row.tenant_id,
        name: row.name,
        status: row.status,
        creator_name: row.creator_name,
        creator_email: row.creator_email,
        is_reseller: row.is_reseller,
        parent_tenant_id: row.parent_tenant_id,
        alias: row.alias,
        metadata,
        settings: Settings {
            timezone: row.timezone,
            date_format: row.date_format,
            time_format: row.time_format,
            currency: row.currency,
            address: row.address,
            logo: row.logo,
            logo_url: row.logo_url,
            application_url: row.application_url,
            website: row.website,
            locale: row.locale,
        },
        sub_account_access_type: access,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Every column of a live account, for insert or full-row update.
pub(super) fn account_to_active(account: &Account) -> accounts::ActiveModel {
    let s = &account.settings;
    accounts::ActiveModel {
        tenant_id: Set(account.tenant_id.clone()),
        name: Set(account.name.clone()),
        status: Set(account.status.clone()),
        website: Set(s.website.clone()),
        application_url: Set(s.application_url.clone()),
        logo: Set(s.logo.clone()),
        logo_url: Set(s.logo_url.clone()),
        address: Set(s.address.clone()),
        timezone: Set(s.timezone.clone()),
        currency: Set(s.currency.clone()),
        creator_name: Set(account.creator_name.clone()),
        creator_email: Set(account.creator_email.clone()),
        date_format: Set(s.date_format.clone()),
        time_format: Set(s.time_format.clone()),
        locale: Set(s.locale.clone()),
        is_reseller: Set(account.is_reseller),
        parent_tenant_id: Set(account.parent_tenant_id.clone()),
        alias: Set(account.alias.clone()),
        metadata: Set(serde_json::Value::Object(account.metadata.clone()).to_string()),
        sub_account_access_type: Set(account.sub_account_access_type.as_str().to_owned()),
        created_at: Set(account.created_at),
        updated_at: Set(account.updated_at),
        deleted_at: Set(None),
    }
}
