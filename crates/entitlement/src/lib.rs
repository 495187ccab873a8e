//! tenantry-entitlement
