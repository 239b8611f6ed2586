//! Encoding of stored values: one version byte, then postcard.
//!
//! postcard is compact (about a third of JSON here), maintained, and serde-based with a frozen
//! 1.x wire format. bincode 3 is an empty crate and bincode 1 and 2 carry RUSTSEC-2025-0141,
//! so it was not an option. postcard is not self-describing: a record that gains a field gets a
//! new version byte and a decode arm for the old one, never a silent reinterpretation.

use super::StoreError;
use serde::{Serialize, de::DeserializeOwned};

pub fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![version];
    let body = postcard::to_stdvec(value)
        .map_err(|error| StoreError::Corrupt(format!("cannot encode: {error}")))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Decodes a record written with `version`; any other version is reported, not guessed.
pub fn decode<T: DeserializeOwned>(what: &str, version: u8, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((found, body)) if *found == version => postcard::from_bytes(body)
            .map_err(|error| StoreError::Corrupt(format!("{what} record cannot be read: {error}"))),
        Some((found, _)) => Err(StoreError::Corrupt(format!(
            "{what} record has unknown version {found}"
        ))),
        None => Err(StoreError::Corrupt(format!("{what} record is empty"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        a: i64,
        b: Option<String>,
    }

    #[test]
    fn records_round_trip_and_refuse_other_versions() {
        let row = Row {
            a: -5,
            b: Some("원두".into()),
        };
        let bytes = encode(1, &row).unwrap();
        assert_eq!(decode::<Row>("row", 1, &bytes).unwrap(), row);
        assert!(decode::<Row>("row", 2, &bytes).is_err());
        assert!(decode::<Row>("row", 1, &[]).is_err());
        assert!(decode::<Row>("row", 1, &[1, 0xff]).is_err());
    }
}
