//! Tenantry's protobuf contracts, generated from the workspace's `proto/` directory.
//!
//! Messages are always available. gRPC clients (`*_client` modules) need the `client` feature,
//! gRPC servers (`*_server` modules) the `server` feature. [`FILE_DESCRIPTOR_SET`] feeds
//! `tonic-reflection`.

pub mod codec;
#[cfg(feature = "index")]
pub mod index_stream;

/// Encoded `google.protobuf.FileDescriptorSet` of every Tenantry proto file and its imports,
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tenantry_descriptor.bin"));

/// Shared types: paging, error details, nullable wrappers (`tenantry.common.*`).
pub mod common {
    /// `tenantry.common.v1`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        clippy::restriction,
        missing_docs,
        unreachable_pub
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tenantry.common.v1.rs"));
    }
}

/// The audit log both services serve (`tenantry.audit.*`).
pub mod audit {
    /// `tenantry.audit.v1`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        clippy::restriction,
        missing_docs,
        unreachable_pub
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tenantry.audit.v1.rs"));
    }
}

/// The tenant (account) service contracts (`tenantry.tenant.*`).
pub mod tenant {
    /// `tenantry.tenant.v1`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        clippy::restriction,
        missing_docs,
        unreachable_pub
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tenantry.tenant.v1.rs"));
    }
}

/// The entitlement service contracts (`tenantry.entitlement.*`).
pub mod entitlement {
    /// `tenantry.entitlement.v1`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        clippy::nursery,
        clippy::restriction,
        missing_docs,
        unreachable_pub
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tenantry.entitlement.v1.rs"));
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    /// The services and the RPCs the gateway and the services rely on.
    const EXPECTED: &[(&str, &[&str])] = &[
        (
            "tenantry.tenant.v1.TenantService",
            &[
                "CreateAccount",
                "GetAccount",
                "GetAccountByAlias",
                "BatchGetAccounts",
                "ListAccounts",
                "UpdateAccount",
                "DeleteAccount",
                "AddAccountMetadata",
                "DeleteAccountMetadata",
                "GetAccountSettings",
                "UpdateAccountSettings",
                "GetPublicAccountSettings",
            ],
        ),
        (
            "tenantry.tenant.v1.HierarchyService",
            &[
                "CreateSubAccount",
                "AttachSubAccount",
                "DetachSubAccount",
                "ListDescendants",
                "ListAncestors",
                "GetSubtree",
                "UpdateSubAccountManagement",
                "GetHierarchySettings",
                "UpdateHierarchySettings",
                "CheckSubAccountScope",
            ],
        ),
        (
            "tenantry.tenant.v1.MembershipService",
            &[
                "AddMembership",
                "RemoveMembership",
                "ListAccountMembers",
                "ListUserAccounts",
            ],
        ),
        (
            "tenantry.tenant.v1.MigrationService",
            &["SubmitMigration", "GetMigrationStatus"],
        ),
        ("tenantry.tenant.v1.ChangeFeedService", &["WatchChanges"]),
        (
            "tenantry.entitlement.v1.FeatureService",
            &[
                "CreateFeature",
                "GetFeature",
                "ListFeatures",
                "UpdateFeature",
                "DeleteFeature",
            ],
        ),
        (
            "tenantry.entitlement.v1.PlanService",
            &[
                "CreatePlan",
                "GetPlan",
                "ListPlans",
                "UpdatePlan",
                "DeletePlan",
                "ListPlanFeatures",
                "LinkPlanFeatures",
                "UnlinkPlanFeatures",
                "ListTenantPlans",
            ],
        ),
        (
            "tenantry.entitlement.v1.FeatureFlagService",
            &[
                "CreateFeatureFlag",
                "GetFeatureFlag",
                "ListFeatureFlags",
                "UpdateFeatureFlag",
                "DeleteFeatureFlag",
            ],
        ),
        (
            "tenantry.entitlement.v1.RouteService",
            &[
                "CreateRoute",
                "GetRoute",
                "ListRoutes",
                "UpdateRoute",
                "DeleteRoute",
            ],
        ),
        (
            "tenantry.entitlement.v1.GrantService",
            &[
                "CreateGrant",
                "GetGrant",
                "ListGrants",
                "UpdateGrant",
                "DeleteGrant",
                "RevokeGrant",
                "BatchCreateGrants",
                "BatchUpdateGrants",
                "BatchDeleteGrants",
                "ListUserGrants",
            ],
        ),
        (
            "tenantry.entitlement.v1.EntitlementService",
            &[
                "IsEntitledTo",
                "BatchIsEntitledTo",
                "GetAccountEntitlements",
                "Explain",
                "WhatIf",
                "GetRevision",
            ],
        ),
        (
            "tenantry.entitlement.v1.IndexStreamService",
            &["WatchIndex"],
        ),
    ];

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|err| panic!("FILE_DESCRIPTOR_SET does not decode: {err}"))
    }

    /// Fully qualified service name -> its method descriptors.
    fn services(fds: &FileDescriptorSet) -> Vec<(String, &prost_types::ServiceDescriptorProto)> {
        fds.file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |svc| (format!("{}.{}", file.package(), svc.name()), svc))
            })
            .collect()
    }

    #[test]
    fn descriptor_set_lists_every_service_and_key_rpc() {
        let fds = descriptor_set();
        let services = services(&fds);
        for (service, rpcs) in EXPECTED {
            let Some((_, descriptor)) = services.iter().find(|(name, _)| name == service) else {
                panic!("service {service} missing from the descriptor set");
            };
            for rpc in *rpcs {
                assert!(
                    descriptor.method.iter().any(|m| m.name() == *rpc),
                    "rpc {service}/{rpc} missing from the descriptor set"
                );
            }
        }
    }

    #[test]
    fn streaming_shapes_are_as_documented() {
        let fds = descriptor_set();
        let services = services(&fds);
        let method = |service: &str, rpc: &str| {
            services
                .iter()
                .find(|(name, _)| name == service)
                .and_then(|(_, svc)| svc.method.iter().find(|m| m.name() == rpc))
                .unwrap_or_else(|| panic!("{service}/{rpc} missing"))
                .clone()
        };
        let watch = method("tenantry.tenant.v1.ChangeFeedService", "WatchChanges");
        assert!(watch.server_streaming() && !watch.client_streaming());
        let submit = method("tenantry.tenant.v1.MigrationService", "SubmitMigration");
        assert!(submit.client_streaming() && !submit.server_streaming());
    }

    #[test]
    fn every_entitlement_write_returns_a_revision() {
        let fds = descriptor_set();
        let writes = [
            "Create", "Update", "Delete", "Revoke", "Batch", "Link", "Unlink",
        ];
        let mut checked = 0_usize;
        for file in fds
            .file
            .iter()
            .filter(|f| f.package() == "tenantry.entitlement.v1")
        {
            // Webhook endpoints are configuration outside the index: no revision to wait for.
            for svc in file.service.iter().filter(|s| s.name() != "WebhookService") {
                for m in &svc.method {
                    let is_write = writes.iter().any(|w| m.name().starts_with(w));
                    let is_check = m.name() == "BatchIsEntitledTo";
                    if !is_write || is_check {
                        continue;
                    }
                    let output = m.output_type().rsplit('.').next().unwrap_or_default();
                    let message = fds
                        .file
                        .iter()
                        .flat_map(|f| f.message_type.iter())
                        .find(|msg| msg.name() == output)
                        .unwrap_or_else(|| panic!("response {output} not found"));
                    assert!(
                        message.field.iter().any(|f| f.name() == "revision"
                            && f.r#type() == prost_types::field_descriptor_proto::Type::Uint64),
                        "{}/{} response {output} has no uint64 revision",
                        svc.name(),
                        m.name()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 21, "only {checked} entitlement writes found");
    }

    #[test]
    fn generated_types_are_usable() {
        use crate::entitlement::v1::{Allocation, MaxCountAllocation, allocation};
        let alloc = Allocation {
            kind: Some(allocation::Kind::MaxCountAllocation(MaxCountAllocation {
                value: 5,
                unlimited: false,
            })),
        };
        let bytes = alloc.encode_to_vec();
        assert_eq!(Allocation::decode(bytes.as_slice()).ok(), Some(alloc));
    }

    #[cfg(all(feature = "client", feature = "server"))]
    #[test]
    fn client_and_server_modules_exist() {
        let _ = std::any::type_name::<
            crate::tenant::v1::tenant_service_client::TenantServiceClient<
                tonic::transport::Channel,
            >,
        >();
        let _ = std::any::type_name::<
            crate::entitlement::v1::entitlement_service_server::EntitlementServiceServer<()>,
        >();
    }
}
