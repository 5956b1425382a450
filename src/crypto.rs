//! Keys and authenticated encryption for repositories encrypted at rest. SPEC.md ("Encryption at rest") is
//! authoritative for what is derived and sealed, and how.
//!
//! - **Master key**: 32 random bytes, kept in a root-only key file (`KeyFile`), never in the repository.
//! - **Derived keys** (BLAKE3 `derive_key`, one context string each): the *id key* makes blob ids keyed BLAKE3
//!   hashes, so that knowing a file does not let anyone confirm it is stored; the *data key* is the root of every
//!   encryption key; the *chunker seed* makes chunk boundaries depend on the key; the *check value* lets a reader
//!   tell a wrong key from damage before decrypting anything.
//! - **Sealed units**: each (a blob, a pack trailer, a manifest's or pack index object's envelope) has a random
//!   32-byte salt; its own ChaCha20-Poly1305 key is the data key's keyed BLAKE3 of that salt, and the parts
//!   sealed under it are numbered, the number being the 96-bit nonce (one part, 0, so far). A nonce is thus never
//!   reused under one key without keeping a counter across machines, and a random 96-bit nonce's birthday bound
//!   (2^32 messages per key) does not apply: each key seals one unit.
//! - The associated data binds each sealed part to what it claims to be (its kind and blob id), so a part moved
//!   to another place in the same object, or into another object, fails to open.
//!
//! Primitives come from ring (ChaCha20-Poly1305, the system RNG) and blake3; nothing cryptographic is written here.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::path::{Path, PathBuf};

/// Bytes of a master key, a derived key and an object salt.
pub const KEY_LEN: usize = 32;
/// Bytes the AEAD adds to each sealed part (the Poly1305 tag).
pub const TAG_LEN: usize = 16;

const ID_CONTEXT: &str = "backupfs 2026-11-30 blob id key";
const DATA_CONTEXT: &str = "backupfs 2026-11-30 data key";
const CHUNKER_CONTEXT: &str = "backupfs 2026-11-30 chunker seed";
const CHECK_CONTEXT: &str = "backupfs 2026-11-30 key check value";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A sealed part that does not open: changed, truncated, moved, or sealed under another key.
    #[error("{what}: authentication failed (damaged, moved or written with another key)")]
    Unauthentic { what: String },
    #[error("the system's random number generator failed")]
    Random,
}

/// The AEAD that seals a repository's units, recorded in its config as the encryption scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// Scheme 1: fast everywhere in software, constant-time without special instructions.
    ChaCha20Poly1305,
    /// Scheme 2: about 3.7 times as fast with AES and carry-less multiply instructions (measured here: 6.6
    /// against 1.77 GB/s), the default where the machine making the repository has them.
    Aes256Gcm,
}

impl Cipher {
    pub fn from_scheme(scheme: u32) -> Option<Self> {
        match scheme {
            crate::format::config::SCHEME_CHACHA20_POLY1305 => Some(Self::ChaCha20Poly1305),
            crate::format::config::SCHEME_AES_256_GCM => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    pub fn scheme(self) -> u32 {
        match self {
            Self::ChaCha20Poly1305 => crate::format::config::SCHEME_CHACHA20_POLY1305,
            Self::Aes256Gcm => crate::format::config::SCHEME_AES_256_GCM,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// AES-256-GCM where this CPU has AES and carry-less multiply instructions, else ChaCha20-Poly1305.
    pub fn preferred() -> Self {
        #[cfg(target_arch = "x86_64")]
        let hardware_aes =
            std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let hardware_aes = std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let hardware_aes = false;
        if hardware_aes {
            Self::Aes256Gcm
        } else {
            Self::ChaCha20Poly1305
        }
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Self::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Self::Aes256Gcm => &AES_256_GCM,
        }
    }
}

/// A repository's master key. Debug prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new key from the system's random number generator.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(random()?))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        crate::format::ids::hex(&self.0)
    }

    /// What the key derives to be told apart from other keys (stored in the config).
    pub fn check_value(&self) -> [u8; 16] {
        let mut check = [0u8; 16];
        check.copy_from_slice(&blake3::derive_key(CHECK_CONTEXT, &self.0)[..16]);
        check
    }

    /// The keys every use of this master key derives from it, sealing with `cipher`.
    pub fn derive(&self, cipher: Cipher) -> Keys {
        let seed = blake3::derive_key(CHUNKER_CONTEXT, &self.0);
        let check = self.check_value();
        Keys {
            id: blake3::derive_key(ID_CONTEXT, &self.0),
            data: blake3::derive_key(DATA_CONTEXT, &self.0),
            chunker_seed: u64::from_le_bytes(seed[..8].try_into().unwrap_or_default()),
            check,
            cipher,
        }
    }
}

/// The keys derived from a master key.
#[derive(Clone)]
pub struct Keys {
    id: [u8; KEY_LEN],
    data: [u8; KEY_LEN],
    /// FastCDC's gear seed: chunk boundaries, and so chunk lengths, depend on the key.
    pub chunker_seed: u64,
    /// Stored in an encrypted repository's config: a key whose check value differs is another key.
    pub check: [u8; 16],
    pub cipher: Cipher,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// 32 random bytes from the system.
pub fn random() -> Result<[u8; KEY_LEN], CryptoError> {
    let mut bytes = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

impl Keys {
    /// A blob's id in an encrypted repository: the keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> [u8; KEY_LEN] {
        *blake3::keyed_hash(&self.id, plaintext).as_bytes()
    }

    /// The sealing key of the object with this salt.
    pub fn object(&self, salt: &[u8; KEY_LEN]) -> ObjectKey {
        let key = blake3::keyed_hash(&self.data, salt);
        // Both ciphers take any 32 bytes as a key: construction cannot fail.
        let unbound = UnboundKey::new(self.cipher.algorithm(), key.as_bytes())
            .unwrap_or_else(|_| unreachable!("a 32-byte key"));
        ObjectKey(LessSafeKey::new(unbound))
    }
}

/// The AEAD key of one object: seals and opens its numbered parts.
pub struct ObjectKey(LessSafeKey);

fn nonce(part: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&part.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl ObjectKey {
    /// Encrypts `plaintext` as part number `part` of the object, bound to `aad`; returns ciphertext and tag.
    /// Each part number must be sealed once per object.
    pub fn seal(&self, part: u64, aad: &[u8], mut plaintext: Vec<u8>) -> Vec<u8> {
        // ring fails only for inputs over 256 GiB, far beyond any part (a chunk, a trailer, a manifest).
        if self
            .0
            .seal_in_place_append_tag(nonce(part), Aad::from(aad), &mut plaintext)
            .is_err()
        {
            unreachable!("a part of more than 256 GiB");
        }
        plaintext
    }

    /// Decrypts part number `part` where it lies (the read path's scratch buffer) and returns the plaintext's
    /// part of it; None if it does not open.
    pub fn open_in_place<'a>(
        &self,
        part: u64,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Option<&'a mut [u8]> {
        self.0
            .open_in_place(nonce(part), Aad::from(aad), sealed)
            .ok()
    }

    /// Decrypts part number `part`, sealed in `in_out[from..]`, into `in_out[..plaintext length]` in one pass
    /// (a raw blob read straight into the buffer that is returned); returns the plaintext's length, None if it
    /// does not open.
    pub fn open_to_front(
        &self,
        part: u64,
        aad: &[u8],
        in_out: &mut [u8],
        from: usize,
    ) -> Option<usize> {
        self.0
            .open_within(nonce(part), Aad::from(aad), in_out, from..)
            .ok()
            .map(|plain| plain.len())
    }

    /// Decrypts part number `part`; any change to the bytes, the part number or `aad` is an error naming `what`.
    pub fn open(
        &self,
        part: u64,
        aad: &[u8],
        mut sealed: Vec<u8>,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, CryptoError> {
        let len = self
            .0
            .open_in_place(nonce(part), Aad::from(aad), &mut sealed)
            .map_err(|_| CryptoError::Unauthentic { what: what() })?
            .len();
        sealed.truncate(len);
        Ok(sealed)
    }
}

/// Why a file holding a secret was not read.
#[derive(Debug)]
pub enum PrivateFileError {
    Unreadable(std::io::Error),
    /// Group or others may read or write it: its mode.
    Exposed(u32),
}

/// The text of a file holding a secret (a key file, S3 credentials), only if no one but its owner may read or
/// write it. The mode is checked on the file that is read, not on a path that could be replaced in between.
pub fn read_private(path: &Path) -> Result<String, PrivateFileError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = std::fs::File::open(path).map_err(PrivateFileError::Unreadable)?;
    let mode = file
        .metadata()
        .map_err(PrivateFileError::Unreadable)?
        .mode();
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Exposed(mode & 0o7777));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(PrivateFileError::Unreadable)?;
    Ok(text)
}

/// Why a key file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {}: readable or writable by others (mode {mode:o}); make it 0600 and owned by its user", path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("key file {}: line {line}: {what}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        what: &'static str,
    },
    #[error("key file {} is the key of repository {found}, not of repository {wanted}", path.display())]
    OtherRepository {
        path: PathBuf,
        found: String,
        wanted: String,
    },
}

/// A key file: which repository the key belongs to, and the key.
///
/// ```text
/// backupfs key 1
/// repository <64 hex digits: the repository id>
/// key <64 hex digits>
/// ```
/// Lines may be followed by comments (`#` to the end of the line); the text is what `key show` prints, so the
/// same text, typed back from paper, is a key file again.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub repository: [u8; 32],
    pub key: MasterKey,
}

const KEY_FILE_FIRST_LINE: &str = "backupfs key 1";

impl KeyFile {
    /// The file's text.
    pub fn to_text(&self) -> String {
        format!(
            "{KEY_FILE_FIRST_LINE}\nrepository {}\nkey {}\n",
            crate::format::ids::hex(&self.repository),
            self.key.to_hex()
        )
    }

    /// Parses the text of the file at `path` (which only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyFileError> {
        let malformed = |line: usize, what: &'static str| KeyFileError::Malformed {
            path: path.to_path_buf(),
            line,
            what,
        };
        let mut lines = (text.lines().enumerate())
            .map(|(n, l)| (n + 1, l.split('#').next().unwrap_or("").trim()))
            .filter(|(_, l)| !l.is_empty());
        match lines.next() {
            Some((_, KEY_FILE_FIRST_LINE)) => {}
            Some((n, _)) => {
                return Err(malformed(
                    n,
                    "not a backupfs key file (expected \"backupfs key 1\")",
                ))
            }
            None => return Err(malformed(1, "empty")),
        }
        let mut field = |name: &str| -> Result<[u8; 32], KeyFileError> {
            let (n, line) = lines.next().ok_or(malformed(0, "ends early"))?;
            let value = line
                .strip_prefix(name)
                .map(str::trim)
                .ok_or(malformed(n, "unexpected line"))?;
            crate::format::ids::parse_hex(value).ok_or(malformed(n, "not 64 hex digits"))
        };
        let repository = field("repository")?;
        let key = MasterKey(field("key")?);
        if let Some((n, _)) = lines.next() {
            return Err(malformed(n, "unexpected line after the key"));
        }
        Ok(Self { repository, key })
    }

    /// Reads the key file at `path` for repository `wanted`: refused if others may read or write it, or if it
    /// holds another repository's key.
    pub fn load(path: &Path, wanted: &[u8; 32]) -> Result<Self, KeyFileError> {
        let text = read_private(path).map_err(|e| match e {
            PrivateFileError::Unreadable(source) => KeyFileError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
            PrivateFileError::Exposed(mode) => KeyFileError::Exposed {
                path: path.to_path_buf(),
                mode,
            },
        })?;
        let file = Self::parse(&text, path)?;
        if &file.repository != wanted {
            return Err(KeyFileError::OtherRepository {
                path: path.to_path_buf(),
                found: crate::format::ids::hex(&file.repository),
                wanted: crate::format::ids::hex(wanted),
            });
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        MasterKey::from_bytes([7; 32]).derive(Cipher::ChaCha20Poly1305)
    }

    #[test]
    fn sealed_parts_open_only_unchanged_in_their_place() {
        for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            sealed_parts_open_only_unchanged_with(cipher);
        }
    }

    fn sealed_parts_open_only_unchanged_with(cipher: Cipher) {
        let k = MasterKey::from_bytes([7; 32]).derive(cipher);
        let salt = [1u8; 32];
        let object = k.object(&salt);
        let sealed = object.seal(3, b"chunk id", b"hello world".to_vec());
        assert_eq!(sealed.len(), 11 + TAG_LEN);
        let what = || "part 3".to_string();
        assert_eq!(
            object.open(3, b"chunk id", sealed.clone(), what).unwrap(),
            b"hello world"
        );
        // Another place, other associated data, another object, another key, any flipped bit: refused.
        assert!(object.open(4, b"chunk id", sealed.clone(), what).is_err());
        assert!(object.open(3, b"other id", sealed.clone(), what).is_err());
        assert!(k
            .object(&[2; 32])
            .open(3, b"chunk id", sealed.clone(), what)
            .is_err());
        let other = MasterKey::from_bytes([8; 32]).derive(cipher);
        assert!(other
            .object(&salt)
            .open(3, b"chunk id", sealed.clone(), what)
            .is_err());
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(object.open(3, b"chunk id", bad, what).is_err(), "bit {i}");
        }
        assert!(object
            .open(3, b"chunk id", sealed[..sealed.len() - 1].to_vec(), what)
            .is_err());
        let err = object.open(3, b"x", sealed, what).unwrap_err().to_string();
        assert!(err.starts_with("part 3: authentication failed"), "{err}");
    }

    #[test]
    fn derived_keys_are_distinct_and_ids_keyed() {
        let k = keys();
        assert_ne!(k.id, k.data);
        assert_ne!(k.blob_id(b"x"), *blake3::hash(b"x").as_bytes());
        assert_ne!(
            k.blob_id(b"x"),
            MasterKey::from_bytes([8; 32])
                .derive(Cipher::Aes256Gcm)
                .blob_id(b"x")
        );
        assert_eq!(k.blob_id(b"x"), keys().blob_id(b"x"));
        assert_ne!(k.chunker_seed, 0);
        assert_ne!(
            MasterKey::generate().unwrap(),
            MasterKey::generate().unwrap()
        );
        assert_eq!(
            format!("{:?}", MasterKey::from_bytes([7; 32])),
            "MasterKey(..)"
        );
    }

    #[test]
    fn key_files_round_trip_and_name_what_is_wrong() {
        let path = Path::new("/etc/backupfs/keys/r.key");
        let file = KeyFile {
            repository: [5; 32],
            key: MasterKey::from_bytes([6; 32]),
        };
        let text = file.to_text();
        assert_eq!(KeyFile::parse(&text, path).unwrap(), file);
        let commented = text.replace("\nkey ", "\n# typed back from paper\nkey ") + "# end\n";
        assert_eq!(KeyFile::parse(&commented, path).unwrap(), file);
        for (bad, needle) in [
            ("", "line 1: empty"),
            ("backupfs key 2\n", "line 1: not a backupfs key file"),
            (
                "backupfs key 1\nrepository 00\n",
                "line 2: not 64 hex digits",
            ),
            ("backupfs key 1\nkey 00\n", "line 2: unexpected line"),
            (
                &text.replace("\nkey", "\nkey x"),
                "line 3: not 64 hex digits",
            ),
            (
                &(text.clone() + "more\n"),
                "line 4: unexpected line after the key",
            ),
        ] {
            let err = KeyFile::parse(bad, path).unwrap_err().to_string();
            assert!(
                err.starts_with("key file /etc/backupfs/keys/r.key: "),
                "{err}"
            );
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn key_files_readable_by_others_or_of_another_repository_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("backupfs-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let file = KeyFile {
            repository: [5; 32],
            key: MasterKey::from_bytes([6; 32]),
        };
        std::fs::write(&path, file.to_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyFile::load(&path, &[5; 32]).unwrap_err().to_string();
        assert!(
            err.contains("readable or writable by others (mode 644)"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(KeyFile::load(&path, &[5; 32]).unwrap(), file);
        let err = KeyFile::load(&path, &[9; 32]).unwrap_err().to_string();
        assert!(
            err.contains("is the key of repository 0505") && err.contains("not of repository 0909"),
            "{err}"
        );
        let err = KeyFile::load(&dir.join("missing.key"), &[5; 32])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.key: No such file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
