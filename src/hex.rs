//! Lowercase hex, for tokens, keys, MACs and digests.

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut hex, byte| {
            use std::fmt::Write;
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// The 32 bytes that 64 hex digits spell, or `None` for anything else.
pub fn decode_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes: Vec<u8> = (0..32).collect();
        let text = encode(&bytes);
        assert_eq!(&text[..6], "000102");
        assert_eq!(decode_32(&text).map(|back| back.to_vec()), Some(bytes));
        assert_eq!(decode_32(&"zz".repeat(32)), None);
        assert_eq!(decode_32(&"é".repeat(32)), None);
        assert_eq!(decode_32("00"), None);
    }
}
