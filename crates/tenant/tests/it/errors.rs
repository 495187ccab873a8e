//! Bad input is refused with the right code and a field, never INTERNAL.

use tenantry_proto::{
    common::v1::PageRequest,
    tenant::v1::{self as pb},
};
use tonic::Code;

use crate::helpers::{assert_code, spawn_app, violated_fields};

#[tokio::test]
async fn malformed_requests_are_invalid_argument_with_the_field() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut t = app.tenants();
    let mut h = app.hierarchy();
    let mut m = app.memberships();

    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "tenant_id",
            t.get_account(pb::GetAccountRequest {
                tenant_id: String::new(),
            })
            .await
            .map(drop),
        ),
        (
            "tenant_id",
            t.get_account(pb::GetAccountRequest {
                tenant_id: "a/b".into(),
            })
            .await
            .map(drop),
        ),
        (
            "account",
            t.create_account(pb::CreateAccountRequest {
                account: None,
                idempotency_key: None,
            })
            .await
            .map(drop),
        ),
        (
            "account.creator_email",
            t.create_account(pb::CreateAccountRequest {
                account: Some(pb::NewAccount {
                    name: "x".into(),
                    creator_email: Some("not an email".into()),
                    ..pb::NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await
            .map(drop),
        ),
        (
            "account.settings.timezone",
            t.create_account(pb::CreateAccountRequest {
                account: Some(pb::NewAccount {
                    name: "x".into(),
                    settings: Some(pb::AccountSettings {
                        timezone: Some("Mars Base".into()),
                        ..pb::AccountSettings::default()
                    }),
                    ..pb::NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await
            .map(drop),
        ),
        (
            "sort_by",
            t.list_accounts(pb::ListAccountsRequest {
                sort_by: 99,
                ..pb::ListAccountsRequest::default()
            })
            .await
            .map(drop),
        ),
        (
            "order",
            t.list_accounts(pb::ListAccountsRequest {
                order: 7,
                ..pb::ListAccountsRequest::default()
            })
            .await
            .map(drop),
        ),
        (
            "filter",
            t.list_accounts(pb::ListAccountsRequest {
                filter: Some("x".repeat(300)),
                ..pb::ListAccountsRequest::default()
            })
            .await
            .map(drop),
        ),
        (
            "tenant_ids",
            t.batch_get_accounts(pb::BatchGetAccountsRequest {
                tenant_ids: vec![],
                missing_only: true,
            })
            .await
            .map(drop),
        ),
        (
            "name",
            t.update_account(pb::UpdateAccountRequest {
                tenant_id: "acme".into(),
                name: Some("   ".into()),
                ..pb::UpdateAccountRequest::default()
            })
            .await
            .map(drop),
        ),
        (
            "key",
            t.delete_account_metadata(pb::DeleteAccountMetadataRequest {
                tenant_id: "acme".into(),
                key: String::new(),
            })
            .await
            .map(drop),
        ),
        (
            "child_tenant_id",
            h.attach_sub_account(pb::AttachSubAccountRequest {
                parent_tenant_id: "acme".into(),
                child_tenant_id: "bad id".into(),
                idempotency_key: None,
            })
            .await
            .map(drop),
        ),
        (
            "page.limit",
            m.list_account_members(pb::ListAccountMembersRequest {
                tenant_id: "acme".into(),
                page: Some(PageRequest {
                    limit: Some(500),
                    offset: 0,
                }),
            })
            .await
            .map(drop),
        ),
        (
            "change_types[0]",
            match app
                .feed()
                .watch_changes(pb::WatchChangesRequest {
                    from_sequence: 0,
                    change_types: vec![0],
                    ..Default::default()
                })
                .await
            {
                Ok(_) => Ok(()),
                Err(status) => Err(status),
            },
        ),
        (
            "migration_id",
            app.migrations()
                .get_migration_status(pb::GetMigrationStatusRequest {
                    migration_id: String::new(),
                    errors_page: None,
                })
                .await
                .map(drop),
        ),
    ];
    for (field, result) in cases {
        let status = assert_code(result, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            vec![field.to_owned()],
            "{status:?}"
        );
        assert!(!status.message().is_empty());
    }
}

/// `{"a": {"a": … 1}}`, `levels` objects deep, as a protobuf Struct.
fn nested_struct(levels: usize) -> prost_types::Struct {
    use prost_types::{Struct, Value, value::Kind};
    let mut s = Struct {
        fields: [(
            "a".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(1.0)),
            },
        )]
        .into(),
    };
    for _ in 1..levels {
        s = Struct {
            fields: [(
                "a".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(s)),
                },
            )]
            .into(),
        };
    }
    s
}

#[tokio::test]
async fn oversized_or_deep_input_is_invalid_argument_with_the_field() {
    let app = spawn_app().await;
    app.create("acme", "Acme").await;
    let mut t = app.tenants();
    let create = |account: pb::NewAccount| {
        let mut t = t.clone();
        async move {
            t.create_account(pb::CreateAccountRequest {
                account: Some(account),
                idempotency_key: None,
            })
            .await
            .map(drop)
        }
    };
    // Metadata 11 levels deep decodes but would not survive the change feed's wrapping.
    let deep = create(pb::NewAccount {
        tenant_id: Some("deep".into()),
        name: "Deep".into(),
        metadata: Some(nested_struct(11)),
        ..pb::NewAccount::default()
    })
    .await;
    let status = assert_code(deep, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["account.metadata"], "{status:?}");
    assert!(status.message().contains("levels"), "{status:?}");
    // Ten levels are fine.
    create(pb::NewAccount {
        tenant_id: Some("ten".into()),
        name: "Ten".into(),
        metadata: Some(nested_struct(10)),
        ..pb::NewAccount::default()
    })
    .await
    .unwrap();
    // Deeper than protobuf's recursion limit (100 levels) the request cannot even be decoded:
    // still the sender's fault, not INTERNAL (which alerting counts as ours).
    let undecodable = create(pb::NewAccount {
        tenant_id: Some("undecodable".into()),
        name: "Undecodable".into(),
        metadata: Some(nested_struct(150)),
        ..pb::NewAccount::default()
    })
    .await;
    let status = assert_code(undecodable, Code::InvalidArgument);
    assert!(
        status.message().contains("could not be decoded"),
        "{status:?}"
    );
    // A logo over 256 KiB: every change event carries it.
    let logo = create(pb::NewAccount {
        tenant_id: Some("logo".into()),
        name: "Logo".into(),
        settings: Some(pb::AccountSettings {
            logo: Some(format!("data:image/png;base64,{}", "A".repeat(300 * 1024))),
            ..pb::AccountSettings::default()
        }),
        ..pb::NewAccount::default()
    })
    .await;
    let status = assert_code(logo, Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        ["account.settings.logo"],
        "{status:?}"
    );
    // Metadata merged into an account is held to the same limits.
    let merge = t
        .add_account_metadata(pb::AddAccountMetadataRequest {
            tenant_id: "acme".into(),
            metadata: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(nested_struct(11))),
            }),
        })
        .await;
    let status = assert_code(merge, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["metadata"], "{status:?}");
}
