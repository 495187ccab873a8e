//! Environment credentials (`POST /auth/vendor`) and the key that signs environment tokens:
//! from configuration, or generated once into `data_dir` in dev mode and reused.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenantry_common::{Config, RunError, Secret};

/// A client ID and secret accepted by `POST /auth/vendor`.
#[derive(Clone, Debug)]
pub struct EnvironmentCredentials {
    pub client_id: String,
    pub secret: Secret,
    /// True when these are development credentials kept in `data_dir` (none were configured).
    pub generated: bool,
}

const CREDENTIALS_FILE: &str = "gateway-credentials.json";
const TOKEN_KEY_FILE: &str = "gateway-token-key";
const CONSOLE_KEY_FILE: &str = "gateway-console-key";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCredentials {
    client_id: String,
    secret: String,
}

/// The primary credentials: `client_id`/`client_secret`, else the first `client_credentials`
/// pair, else (dev mode) a pair generated once into `data_dir` and reused.
pub fn environment_credentials(config: &Config) -> Result<EnvironmentCredentials, RunError> {
    if let (Some(id), Some(secret)) = (&config.client_id, &config.client_secret) {
        return Ok(EnvironmentCredentials {
            client_id: id.clone(),
            secret: secret.clone(),
            generated: false,
        });
    }
    if let Some(first) = configured_pairs(config).into_iter().next() {
        return Ok(first);
    }
    let path = credentials_file(config);
    let contents = read_or_create(&path, || {
        let stored = StoredCredentials {
            client_id: uuid::Uuid::new_v4().to_string(),
            secret: random_token(32),
        };
        serde_json::to_vec_pretty(&stored).unwrap_or_default()
    })?;
    let stored: StoredCredentials = serde_json::from_slice(&contents).map_err(|e| {
        RunError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not valid: {e}", path.display()),
        ))
    })?;
    Ok(EnvironmentCredentials {
        client_id: stored.client_id,
        secret: Secret::new(stored.secret),
        generated: true,
    })
}

/// Frontegg's `vendorId` for this deployment: `vendor_id` when configured, else derived from the
/// primary environment credential's client ID (so it is the same after a restart and on every
/// gateway given the same credentials): the ID itself when it is a UUID, as Frontegg's client
/// IDs are, else a UUID hashed from it (Frontegg's vendor IDs are UUIDs).
pub fn vendor_id(config: &Config) -> Result<String, RunError> {
    if let Some(id) = &config.vendor_id {
        return Ok(id.clone());
    }
    Ok(derived_vendor_id(
        &environment_credentials(config)?.client_id,
    ))
}

fn derived_vendor_id(client_id: &str) -> String {
    if let Ok(id) = uuid::Uuid::parse_str(client_id) {
        return id.hyphenated().to_string();
    }
    let digest = Sha256::digest(format!("tenantry-vendor:{client_id}").as_bytes());
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Where dev mode keeps its generated credentials (owner-only JSON).
pub fn credentials_file(config: &Config) -> PathBuf {
    config.data_dir.join(CREDENTIALS_FILE)
}

/// Every accepted pair: the primary one plus the `client_credentials` list.
pub fn all_credentials(config: &Config) -> Result<Vec<EnvironmentCredentials>, RunError> {
    let mut all = vec![environment_credentials(config)?];
    for pair in configured_pairs(config) {
        if !all.iter().any(|c| c.client_id == pair.client_id) {
            all.push(pair);
        }
    }
    Ok(all)
}

fn configured_pairs(config: &Config) -> Vec<EnvironmentCredentials> {
    config
        .client_credentials
        .as_ref()
        .map(|list| {
            list.expose()
                .split(',')
                .filter_map(|pair| pair.trim().split_once(':'))
                .map(|(id, secret)| EnvironmentCredentials {
                    client_id: id.trim().to_owned(),
                    secret: Secret::new(secret.trim()),
                    generated: false,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The HS256 key for environment tokens in dev mode, generated once into `data_dir`.
pub fn dev_token_key(config: &Config) -> Result<Secret, RunError> {
    dev_secret(config, TOKEN_KEY_FILE)
}

/// The key sealing console sessions in dev mode, generated once into `data_dir` like the token
/// key: sessions survive a restart, and gateways sharing the directory share them.
pub fn dev_console_key(config: &Config) -> Result<Secret, RunError> {
    dev_secret(config, CONSOLE_KEY_FILE)
}

/// A random secret generated once into `data_dir/file` and reused.
fn dev_secret(config: &Config, file: &str) -> Result<Secret, RunError> {
    let contents = read_or_create(&config.data_dir.join(file), || {
        random_token(48).into_bytes()
    })?;
    Ok(Secret::new(String::from_utf8_lossy(&contents).trim()))
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Reads `path`, or creates it (owner-only permissions) with `make()`'s bytes. Creation is
/// exclusive, so two processes sharing a data dir agree on whichever wrote first.
fn read_or_create(path: &Path, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, RunError> {
    match std::fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, &e)),
    }
    if let Some(dir) = path.parent() {
        tenantry_common::files::create_private_dir(dir).map_err(|e| io_error(dir, &e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            let bytes = make();
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(path, &e))?;
            tracing::info!(path = %path.display(), "generated development secret file");
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).map_err(|e| io_error(path, &e))
        }
        Err(e) => Err(io_error(path, &e)),
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> RunError {
    RunError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", PathBuf::from(path).display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_credentials_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let first = environment_credentials(&config).unwrap();
        let second = environment_credentials(&config).unwrap();
        assert!(first.generated);
        assert_eq!(first.client_id, second.client_id);
        assert_eq!(first.secret, second.secret);
        assert_eq!(
            dev_token_key(&config).unwrap(),
            dev_token_key(&config).unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&config.data_dir), 0o700, "data directory");
            for entry in std::fs::read_dir(&config.data_dir).unwrap() {
                let path = entry.unwrap().path();
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }

    #[test]
    fn the_vendor_id_is_configured_or_derived_from_the_client_id_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        // Dev mode: the generated client ID (a UUID) is the vendor, on every start.
        let generated = environment_credentials(&dev).unwrap().client_id;
        assert_eq!(vendor_id(&dev).unwrap(), generated);
        assert_eq!(vendor_id(&dev).unwrap(), vendor_id(&dev).unwrap());
        let named = |id: &str| Config {
            client_id: Some(id.into()),
            client_secret: Some(Secret::new("a-secret-of-enough-length")),
            ..Config::default()
        };
        let uuid = "E6A5012C-CBEB-4C1E-AB80-E5F43EFD44E3";
        assert_eq!(
            vendor_id(&named(uuid)).unwrap(),
            "e6a5012c-cbeb-4c1e-ab80-e5f43efd44e3"
        );
        // Any other client ID: a UUID of its own, the same every time, another for another ID.
        let main = vendor_id(&named("main")).unwrap();
        assert!(uuid::Uuid::parse_str(&main).is_ok(), "{main}");
        assert_eq!(main, vendor_id(&named("main")).unwrap());
        assert_ne!(main, vendor_id(&named("ci")).unwrap());
        let configured = Config {
            vendor_id: Some("my-frontegg-vendor".into()),
            ..named("main")
        };
        assert_eq!(vendor_id(&configured).unwrap(), "my-frontegg-vendor");
    }

    #[test]
    fn configured_pairs_win_and_all_are_listed() {
        let config = Config {
            client_id: Some("main".into()),
            client_secret: Some(Secret::new("main-secret")),
            client_credentials: Some(Secret::new("ci:ci-secret, ops:ops-secret")),
            data_dir: PathBuf::from("/nonexistent"),
            ..Config::default()
        };
        let primary = environment_credentials(&config).unwrap();
        assert!(!primary.generated);
        assert_eq!(primary.client_id, "main");
        let ids: Vec<_> = all_credentials(&config)
            .unwrap()
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(ids, vec!["main", "ci", "ops"]);
    }
}
