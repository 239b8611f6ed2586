//! The buyer cookie: a random buyer id signed with HMAC-SHA256 under a key kept in the store.
//! It is HttpOnly, so page scripts cannot read it, and a forged or altered one is ignored.

use crate::domain::BuyerId;
use crate::hex::{decode_32, encode as hex};
use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const BUYER_COOKIE: &str = "kassa_buyer";
/// How long a buyer keeps seeing their payments on this device: one year.
pub const BUYER_COOKIE_MAX_AGE_S: u64 = 365 * 24 * 3600;
/// Longest Cookie header kassa reads.
const COOKIE_HEADER_BYTES_MAX: usize = 8 * 1024;

fn mac(key: &[u8; 32], buyer: BuyerId) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(buyer.to_string().as_bytes());
    mac
}

pub fn sign(key: &[u8; 32], buyer: BuyerId) -> String {
    let tag = mac(key, buyer).finalize().into_bytes();
    format!("{buyer}.{}", hex(&tag))
}

fn csrf_mac(key: &[u8; 32], buyer: BuyerId, form_key: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"csrf:");
    mac.update(buyer.to_string().as_bytes());
    mac.update(b":");
    mac.update(form_key.as_bytes());
    mac
}

/// The CSRF token of one rendered form of `buyer`'s: tied to the buyer and to the form's own
/// `Idempotency-Key`, so a page of another site can neither read nor make one.
pub fn csrf_token(key: &[u8; 32], buyer: BuyerId, form_key: &str) -> String {
    hex(&csrf_mac(key, buyer, form_key).finalize().into_bytes())
}

/// Whether `token` is the CSRF token of that form (checked in constant time).
pub fn csrf_valid(key: &[u8; 32], buyer: BuyerId, form_key: &str, token: &str) -> bool {
    decode_32(token).is_some_and(|tag| csrf_mac(key, buyer, form_key).verify_slice(&tag).is_ok())
}

/// The buyer a cookie value names, if its signature is right (checked in constant time).
pub fn verify(key: &[u8; 32], value: &str) -> Option<BuyerId> {
    let (id, hex) = value.split_once('.')?;
    let buyer = BuyerId::parse(id).ok()?;
    let tag = decode_32(hex)?;
    mac(key, buyer).verify_slice(&tag).ok()?;
    Some(buyer)
}

/// The values of the cookies called `name` that a request carries (within a bounded header).
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter(|value| value.len() <= COOKIE_HEADER_BYTES_MAX)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(cookie, _)| *cookie == name)
        .map(|(_, value)| value)
}

/// The verified buyer of a request, if it carries a valid cookie.
pub fn buyer_of(key: &[u8; 32], headers: &HeaderMap) -> Option<BuyerId> {
    values(headers, BUYER_COOKIE).find_map(|value| verify(key, value))
}

/// The `Set-Cookie` value that gives a browser its buyer id.
pub fn set_cookie(key: &[u8; 32], buyer: BuyerId, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{BUYER_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={BUYER_COOKIE_MAX_AGE_S}{secure}",
        sign(key, buyer)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cookies_signed_with_the_key_name_a_buyer() {
        let key = [3u8; 32];
        let buyer = BuyerId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0042);
        let value = sign(&key, buyer);
        assert_eq!(verify(&key, &value), Some(buyer));
        assert_eq!(verify(&[4u8; 32], &value), None);
        let other = BuyerId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0043);
        let forged = format!("{other}.{}", value.split_once('.').unwrap().1);
        assert_eq!(verify(&key, &forged), None);
        assert_eq!(verify(&key, "garbage"), None);
        assert_eq!(verify(&key, "é.é"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {BUYER_COOKIE}={value}")).unwrap(),
        );
        assert_eq!(buyer_of(&key, &headers), Some(buyer));
    }

    #[test]
    fn a_csrf_token_fits_one_buyer_and_one_form() {
        let key = [3u8; 32];
        let buyer = BuyerId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0042);
        let other = BuyerId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0043);
        let token = csrf_token(&key, buyer, "form-key-1");
        assert!(csrf_valid(&key, buyer, "form-key-1", &token));
        assert!(!csrf_valid(&key, other, "form-key-1", &token));
        assert!(!csrf_valid(&key, buyer, "form-key-2", &token));
        assert!(!csrf_valid(&[4u8; 32], buyer, "form-key-1", &token));
        assert!(!csrf_valid(&key, buyer, "form-key-1", ""));
        assert!(!csrf_valid(&key, buyer, "form-key-1", &"zz".repeat(32)));
        assert!(!csrf_valid(&key, buyer, "form-key-1", &"é".repeat(32)));
    }
}
