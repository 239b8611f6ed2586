//! Extractors that turn every malformed request into a JSON 4xx, and the caller's identity.

use super::cookie;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::{BuyerId, IdempotencyKey};
use crate::flows::payments::Viewer;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

/// `Json<T>` whose rejections are kassa's JSON errors.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| ApiJson(value))
            .map_err(ApiError::from)
    }
}

/// `Path<T>` whose rejections are kassa's JSON errors.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(ApiError::from)
    }
}

/// `Query<T>` whose rejections are kassa's JSON errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(ApiError::from)
    }
}

/// Who is calling: the merchant with the admin token, a buyer with a signed cookie, or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Buyer(BuyerId),
    Anonymous,
}

fn bearer_matches(parts: &Parts, state: &AppState) -> bool {
    let Some(presented) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    let expected = state.admin_token.expose().as_bytes();
    !expected.is_empty() && bool::from(presented.trim().as_bytes().ct_eq(expected))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if bearer_matches(parts, state) {
            return Ok(Caller::Admin);
        }
        Ok(cookie::buyer_of(state.cookie_key(), &parts.headers)
            .map_or(Caller::Anonymous, Caller::Buyer))
    }
}

impl Caller {
    /// Who may look at payments: `None` for a caller who is neither merchant nor known buyer.
    pub fn viewer(self) -> Option<Viewer> {
        match self {
            Caller::Admin => Some(Viewer::Admin),
            Caller::Buyer(buyer) => Some(Viewer::Buyer(buyer)),
            Caller::Anonymous => None,
        }
    }
}

/// The `Idempotency-Key` header of a cancel, required and well-formed; a JSON 400 otherwise.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let invalid = |message: String| {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY", message)
        };
        let raw = parts
            .headers
            .get("idempotency-key")
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "IDEMPOTENCY_KEY_REQUIRED",
                    "send an Idempotency-Key header",
                )
            })?
            .to_str()
            .map_err(|_| invalid("Idempotency-Key must be ASCII".into()))?;
        IdempotencyKey::parse(raw)
            .map(IdempotencyKeyHeader)
            .map_err(|error| invalid(error.to_string()))
    }
}

/// Proof that the caller holds the admin token; 401 otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if bearer_matches(parts, state) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}
