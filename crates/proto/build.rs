//! Compiles every `.proto` under the workspace's `proto/` with protox (no system `protoc`),
//! writes the file descriptor set for reflection and generates prost messages plus tonic
//! clients and servers, each gated behind the crate feature of the same name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_root = proto_root
        .canonicalize()
        .with_context(|| format!("proto directory not found at {}", proto_root.display()))?;
    // Watched paths relative to this package: cargo resolves them against whichever checkout
    // builds, so two checkouts sharing a target directory (whose units hash alike) never read
    // each other's generated code.
    println!("cargo:rerun-if-changed=../../proto");

    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    files.sort();
    for file in &files {
        let relative = file
            .strip_prefix(&proto_root)
            .with_context(|| format!("{} outside the proto directory", file.display()))?;
        println!("cargo:rerun-if-changed=../../proto/{}", relative.display());
    }

    let fds = protox::compile(&files, [&proto_root]).context("compiling proto files")?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("tenantry_descriptor.bin"), fds.encode_to_vec())
        .context("writing the file descriptor set")?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .client_mod_attribute(".", r#"#[cfg(feature = "client")]"#)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .emit_rerun_if_changed(false)
        // Undecodable requests are INVALID_ARGUMENT, not tonic-prost's INTERNAL (src/codec.rs).
        .codec_path("crate::codec::TenantryCodec")
        .compile_fds(fds)
        .context("generating Rust code")?;
    Ok(())
}

/// Recursively lists the `.proto` files under `dir`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
