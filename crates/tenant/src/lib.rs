//! tenantry-tenant
