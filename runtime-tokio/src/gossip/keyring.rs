//! The gossip keyring (Consul's `-encrypt`, `consul keyring`): AES-GCM keys of 16, 24 or 32 bytes; the
//! primary key seals, every key is tried to open, so keys rotate without a partition (install → use →
//! remove). Persisted as a JSON array of base64 keys, primary first, in `<data-dir>/serf/local.keyring`
//! (`remote.keyring` for the WAN pool), as Consul does.
//!
//! Sealed format: `[u8 version = 1][12-byte random nonce][ciphertext ‖ 16-byte tag]`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use rand::RngCore;
use std::path::PathBuf;
use std::sync::RwLock;

const SEAL_VERSION: u8 = 1;
/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = 1 + 12 + 16;

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("invalid key: {0} (keys are base64 of 16, 24 or 32 bytes; make one with `concord keygen`)")]
    BadKey(String),
    #[error("no installed key decrypts this message")]
    Undecryptable,
    #[error("the key is not installed")]
    NotInstalled,
    #[error("removing the primary keyring key is not possible")]
    RemovePrimary,
    #[error("keyring file {0}: {1}")]
    File(String, String),
}

/// The keys of one pool. Internally locked: the pool task seals and opens while operators rotate.
pub struct Keyring {
    keys: RwLock<Vec<Vec<u8>>>,
    path: Option<PathBuf>,
}

/// Parse a base64 key and check its length.
pub fn parse_key(b64: &str) -> Result<Vec<u8>, KeyringError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| KeyringError::BadKey(e.to_string()))?;
    match key.len() {
        16 | 24 | 32 => Ok(key),
        n => Err(KeyringError::BadKey(format!("{n} bytes"))),
    }
}

/// A new random 32-byte key, base64 (`concord keygen`).
pub fn generate_key() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    encode(&key)
}

fn encode(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

impl Keyring {
    pub fn new(primary: Vec<u8>, path: Option<PathBuf>) -> Self {
        Keyring {
            keys: RwLock::new(vec![primary]),
            path,
        }
    }

    /// The keyring file if it exists (then `encrypt` is ignored, as in Consul: it only seeds the first
    /// start), else a new keyring from `encrypt`, persisted; `None` without either. The bool is true when
    /// a given `encrypt` was ignored.
    pub fn load_or_init(path: Option<PathBuf>, encrypt: Option<&str>) -> Result<(Option<Keyring>, bool), KeyringError> {
        if let Some(p) = &path {
            if p.exists() {
                let err = |e: String| KeyringError::File(p.display().to_string(), e);
                let text = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
                let list: Vec<String> = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
                let keys = list.iter().map(|k| parse_key(k)).collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() {
                    return Err(err("no keys".into()));
                }
                let ring = Keyring {
                    keys: RwLock::new(keys),
                    path,
                };
                return Ok((Some(ring), encrypt.is_some()));
            }
        }
        let Some(b64) = encrypt else { return Ok((None, false)) };
        let ring = Keyring::new(parse_key(b64)?, path);
        ring.persist()?;
        Ok((Some(ring), false))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Vec<u8>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Vec<u8>>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every key (base64), the primary first.
    pub fn list(&self) -> Vec<String> {
        self.read().iter().map(|k| encode(k)).collect()
    }

    pub fn primary(&self) -> String {
        encode(&self.read()[0])
    }

    pub fn install(&self, b64: &str) -> Result<(), KeyringError> {
        let key = parse_key(b64)?;
        {
            let mut keys = self.write();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        self.persist()
    }

    pub fn use_key(&self, b64: &str) -> Result<(), KeyringError> {
        let key = parse_key(b64)?;
        {
            let mut keys = self.write();
            let pos = keys.iter().position(|k| *k == key).ok_or(KeyringError::NotInstalled)?;
            let k = keys.remove(pos);
            keys.insert(0, k);
        }
        self.persist()
    }

    pub fn remove(&self, b64: &str) -> Result<(), KeyringError> {
        let key = parse_key(b64)?;
        {
            let mut keys = self.write();
            if keys[0] == key {
                return Err(KeyringError::RemovePrimary);
            }
            keys.retain(|k| *k != key);
        }
        self.persist()
    }

    fn persist(&self) -> Result<(), KeyringError> {
        let Some(path) = &self.path else { return Ok(()) };
        let err = |e: std::io::Error| KeyringError::File(path.display().to_string(), e.to_string());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_json::to_string(&self.list()).expect("a list of strings serialises");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Seal with the primary key.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let keys = self.read();
        let sealed = seal(&keys[0], &nonce, plain);
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open with whichever installed key sealed it.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, KeyringError> {
        if data.len() < OVERHEAD || data[0] != SEAL_VERSION {
            return Err(KeyringError::Undecryptable);
        }
        let (nonce, body) = data[1..].split_at(12);
        self.read()
            .iter()
            .find_map(|k| open(k, nonce, body))
            .ok_or(KeyringError::Undecryptable)
    }
}

fn seal(key: &[u8], nonce: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce = Nonce::from_slice(nonce);
    let sealed = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key).map(|c| c.encrypt(nonce, plain)),
        24 => Aes192Gcm::new_from_slice(key).map(|c| c.encrypt(nonce, plain)),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key).map(|c| c.encrypt(nonce, plain)),
    };
    sealed
        .expect("key length checked at parse")
        .expect("AES-GCM encryption of an in-memory buffer cannot fail")
}

fn open(key: &[u8], nonce: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let nonce = Nonce::from_slice(nonce);
    match key.len() {
        16 => AesGcm::<Aes128, aes_gcm::aead::consts::U12>::new_from_slice(key)
            .ok()?
            .decrypt(nonce, body)
            .ok(),
        24 => Aes192Gcm::new_from_slice(key).ok()?.decrypt(nonce, body).ok(),
        _ => AesGcm::<Aes256, aes_gcm::aead::consts::U12>::new_from_slice(key)
            .ok()?
            .decrypt(nonce, body)
            .ok(),
    }
}
