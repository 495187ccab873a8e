//! Tenantry's entitlement service. `domain` holds the transport- and storage-free core: the
//! model, validation and the in-memory evaluation index behind `isEntitledTo`.

pub mod domain;
