//! Integrity of a report directory: a manifest of every output file's SHA-256 (the format of
//! `sha256sum`, so `sha256sum -c MANIFEST.sha256` checks it) signed with Ed25519 in the format
//! of the minisign tool (`minisign -Vm MANIFEST.sha256 -p signer.pub` verifies it).
//!
//! The signature covers the manifest, the manifest covers every file, so changing one byte of
//! any output file, or the manifest, breaks the check.

use crate::onnx::sha256_file;
use serde::Serialize;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST.sha256";
/// The signature's file name (minisign's convention: the signed file's name + `.minisig`).
pub const SIGNATURE: &str = "MANIFEST.sha256.minisig";
/// The signer's public key, written beside the signature.
pub const SIGNER_KEY: &str = "signer.pub";
/// Environment variable holding the password of an encrypted secret key.
pub const PASSWORD_ENV: &str = "FERROCERT_KEY_PASSWORD";

/// Errors of signing and key generation.
#[derive(Debug, Error)]
pub enum SignError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a usable minisign secret key: {message}")]
    Key { path: String, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

fn io(path: &Path, e: impl std::fmt::Display) -> SignError {
    SignError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The manifest of `files` in `dir`: `<sha256>  <name>` per line, sorted by name.
pub fn manifest(dir: &Path, files: &[String]) -> Result<String, SignError> {
    let mut names: Vec<&String> = files.iter().collect();
    names.sort();
    let mut s = String::new();
    for n in names {
        let p = dir.join(n);
        let h = sha256_file(&p).map_err(|e| io(&p, e))?;
        s.push_str(&format!("{h}  {n}\n"));
    }
    Ok(s)
}

/// A minisign secret key, loaded and checked before any work is done.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl SigningKey {
    /// Read the minisign secret key at `key` (unencrypted, or encrypted with the password in
    /// `FERROCERT_KEY_PASSWORD`).
    pub fn load(key: &Path) -> Result<Self, SignError> {
        let text = std::fs::read_to_string(key).map_err(|e| io(key, e))?;
        let bad = |m: String| SignError::Key {
            path: key.display().to_string(),
            message: m,
        };
        let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| bad(e.to_string()))?;
        let sk = match std::env::var(PASSWORD_ENV) {
            Ok(pw) => sk_box.into_secret_key(Some(pw)),
            Err(_) => sk_box.into_unencrypted_secret_key(),
        }
        .map_err(|e| bad(e.to_string()))?;
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| bad(e.to_string()))?;
        Ok(SigningKey { sk, pk })
    }
}

/// Write the manifest of `files` into `dir` and sign it with `key`; writes the signature and
/// the signer's public key beside it.
pub fn sign_dir(dir: &Path, files: &[String], key: &SigningKey) -> Result<(), SignError> {
    let (sk, pk) = (&key.sk, &key.pk);
    let m = manifest(dir, files)?;
    let mp = dir.join(MANIFEST);
    std::fs::write(&mp, &m).map_err(|e| io(&mp, e))?;
    let comment = format!("ferrocert {} report manifest", crate::report::TOOL_VERSION);
    let sig = minisign::sign(
        Some(pk),
        sk,
        Cursor::new(m.as_bytes()),
        Some(&comment),
        None,
    )
    .map_err(|e| SignError::Sign(e.to_string()))?;
    let sp = dir.join(SIGNATURE);
    std::fs::write(&sp, sig.to_string()).map_err(|e| io(&sp, e))?;
    let pp = dir.join(SIGNER_KEY);
    let pk_box = pk.to_box().map_err(|e| SignError::Sign(e.to_string()))?;
    std::fs::write(&pp, pk_box.to_string()).map_err(|e| io(&pp, e))?;
    Ok(())
}

/// Generate an unencrypted minisign key pair: `<prefix>.key` (secret) and `<prefix>.pub`.
/// Refuses to overwrite an existing file.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), SignError> {
    let sk_path = prefix.with_extension("key");
    let pk_path = prefix.with_extension("pub");
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            return Err(io(p, "exists already (not overwritten)"));
        }
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| SignError::Sign(e.to_string()))?;
    let sk = kp
        .sk
        .to_box(Some("ferrocert report signing key"))
        .map_err(|e| SignError::Sign(e.to_string()))?;
    let pk = kp.pk.to_box().map_err(|e| SignError::Sign(e.to_string()))?;
    // The secret key is readable by its owner only (it is not encrypted).
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&sk_path).map_err(|e| io(&sk_path, e))?;
    std::io::Write::write_all(&mut f, sk.to_string().as_bytes()).map_err(|e| io(&sk_path, e))?;
    std::fs::write(&pk_path, pk.to_string()).map_err(|e| io(&pk_path, e))?;
    Ok((sk_path, pk_path))
}

/// What checking a signed directory found.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureCheck {
    /// The key the signature was checked against.
    pub key: String,
    /// Whether that key came from the directory itself (integrity only, not the signer's
    /// identity: pass `--pubkey` to check who signed).
    pub key_from_directory: bool,
    pub signature_valid: bool,
    /// Files whose bytes differ from the manifest, or that are missing.
    pub changed_files: Vec<String>,
    /// Report files present but not in the manifest.
    pub unlisted_files: Vec<String>,
    pub ok: bool,
    pub detail: String,
}

/// Check the signature of `dir` (if it has one, or if `pubkey` is given) and every file of
/// its manifest; `outputs` are the files that must be listed. `None`: unsigned and no key.
pub fn verify_dir(dir: &Path, pubkey: Option<&Path>, outputs: &[String]) -> Option<SignatureCheck> {
    let sig_path = dir.join(SIGNATURE);
    if !sig_path.exists() && pubkey.is_none() {
        return None;
    }
    let key_path = pubkey.map_or_else(|| dir.join(SIGNER_KEY), Path::to_path_buf);
    let mut c = SignatureCheck {
        key: key_path.display().to_string(),
        key_from_directory: pubkey.is_none(),
        signature_valid: false,
        changed_files: vec![],
        unlisted_files: vec![],
        ok: false,
        detail: String::new(),
    };
    let manifest_text = match std::fs::read(dir.join(MANIFEST)) {
        Ok(b) => b,
        Err(e) => {
            c.detail = format!("{MANIFEST}: {e}");
            return Some(c);
        }
    };
    let checked = (|| -> Result<(), String> {
        let pk =
            minisign::PublicKey::from_file(&key_path).map_err(|e| format!("{}: {e}", c.key))?;
        let sig = minisign::SignatureBox::from_file(&sig_path)
            .map_err(|e| format!("{}: {e}", sig_path.display()))?;
        minisign::verify(&pk, &sig, Cursor::new(&manifest_text), true, false, false)
            .map_err(|e| format!("signature: {e}"))
    })();
    match checked {
        Ok(()) => c.signature_valid = true,
        Err(e) => {
            c.detail = e;
            return Some(c);
        }
    }
    let text = String::from_utf8_lossy(&manifest_text);
    let mut listed = Vec::new();
    for line in text.lines() {
        let Some((hash, name)) = line.split_once("  ") else {
            c.changed_files
                .push(format!("(malformed manifest line) {line}"));
            continue;
        };
        listed.push(name.to_string());
        let p = dir.join(name);
        if sha256_file(&p).ok().as_deref() != Some(hash) {
            c.changed_files.push(name.to_string());
        }
    }
    c.unlisted_files = outputs
        .iter()
        .filter(|o| dir.join(o).exists() && !listed.contains(o))
        .cloned()
        .collect();
    c.ok = c.changed_files.is_empty() && c.unlisted_files.is_empty();
    c.detail = if c.ok {
        format!("signature valid; {} files match the manifest", listed.len())
    } else {
        format!(
            "signature valid, but changed: {:?}, unlisted: {:?}",
            c.changed_files, c.unlisted_files
        )
    };
    Some(c)
}
