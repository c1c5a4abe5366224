//! Checksummed postcard values: `crc32 (u32 LE) ++ postcard bytes`, the crc taken over the postcard bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

const CRC_LEN: usize = 4;

pub(crate) fn encode_checked<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(value).expect("postcard encoding into a Vec cannot fail");
    let mut out = Vec::with_capacity(CRC_LEN + body.len());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Why a checksummed value was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("value is {0} bytes, shorter than its checksum")]
    Short(usize),
    #[error("checksum mismatch")]
    Checksum,
    #[error("checksum matches but the value does not decode: {0}")]
    Decode(String),
}

pub(crate) fn decode_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (crc, body) = bytes.split_at_checked(CRC_LEN).ok_or(DecodeError::Short(bytes.len()))?;
    let crc = u32::from_le_bytes(crc.try_into().expect("split at CRC_LEN"));
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::Checksum);
    }
    postcard::from_bytes(body).map_err(|e| DecodeError::Decode(e.to_string()))
}
