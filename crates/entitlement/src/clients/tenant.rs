//! The tenant directory over gRPC: which accounts exist, asked of the tenant service.

use std::collections::HashSet;

use async_trait::async_trait;
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::tenant::v1::{
    BatchGetAccountsRequest, tenant_service_client::TenantServiceClient,
};

use crate::app::ports::TenantDirectory;
use crate::domain::{DomainError, Result};

/// Accounts asked per call.
const CHUNK: usize = 1000;

/// [`TenantDirectory`] backed by the tenant service's `BatchGetAccounts`.
#[derive(Debug, Clone)]
pub struct GrpcTenantDirectory {
    client: TenantServiceClient<ClientChannel>,
}

impl GrpcTenantDirectory {
    pub fn new(channel: ClientChannel, max_message_bytes: usize) -> Self {
        Self {
            client: TenantServiceClient::new(channel)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        }
    }
}

/// A refusal of the tenant service as the domain sees it: an outage is UNAVAILABLE (retry),
/// anything else a bug on one side, INTERNAL.
fn refusal(status: tonic::Status) -> DomainError {
    if tenantry_common::grpc::is_outage(&status) {
        DomainError::Unavailable(
            "tenant service unavailable: accounts cannot be checked; retry".into(),
        )
    } else {
        DomainError::Internal {
            message: "tenant service refused BatchGetAccounts".into(),
            source: Some(Box::new(status)),
        }
    }
}

#[async_trait]
impl TenantDirectory for GrpcTenantDirectory {
    async fn live(&self, ids: &[String]) -> Result<HashSet<String>> {
        let mut live = HashSet::new();
        for chunk in ids.chunks(CHUNK) {
            let response = self
                .client
                .clone()
                .batch_get_accounts(BatchGetAccountsRequest {
                    tenant_ids: chunk.to_vec(),
                    missing_only: true,
                })
                .await
                .map_err(refusal)?
                .into_inner();
            let missing: HashSet<String> = response.missing_tenant_ids.into_iter().collect();
            live.extend(chunk.iter().filter(|id| !missing.contains(*id)).cloned());
        }
        Ok(live)
    }
}
