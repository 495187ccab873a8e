//! The gateway through real HTTP: one test binary made of modules.

mod helpers;
mod platform;
