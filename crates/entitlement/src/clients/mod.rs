//! Adapters for the other services this one calls (the ports of `app::ports` they fill).

pub mod tenant;
pub mod webhook_http;
