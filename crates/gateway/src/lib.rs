//! tenantry-gateway
