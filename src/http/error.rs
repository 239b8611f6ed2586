//! Errors as callers see them: `{"error": {"code", "message"}}` for the API, a friendly page for
//! browsers. Internals are logged with their whole cause chain, never shown.

use super::i18n::{Lang, Texts};
use crate::domain::DomainError;
use crate::flows::FlowError;
use crate::gateway::GatewayError;
use crate::store::StoreError;
use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::rejection::{
    BytesRejection, FormRejection, JsonRejection, PathRejection, QueryRejection,
};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub payment_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            payment_id: None,
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this endpoint needs the admin token (Authorization: Bearer ...)",
        )
    }

    pub fn not_found(what: &str) -> ApiError {
        let code = match what {
            "order" => "ORDER_NOT_FOUND",
            "payment" => "PAYMENT_NOT_FOUND",
            "PG payment" => "PG_PAYMENT_NOT_FOUND",
            "product" => "PRODUCT_NOT_FOUND",
            "dead letter" => "DEAD_LETTER_NOT_FOUND",
            "partner settlement" => "PARTNER_SETTLEMENT_NOT_FOUND",
            _ => "NOT_FOUND",
        };
        ApiError::new(StatusCode::NOT_FOUND, code, format!("{what} not found"))
    }

    pub fn invalid_query(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(payment_id) = self.payment_id {
            error["payment_id"] = serde_json::Value::String(payment_id);
        }
        if let Some(id) = super::observe::request_id() {
            error["request_id"] = serde_json::Value::String(id);
        }
        let mut response =
            (self.status, Json(serde_json::json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        let code = match &error {
            DomainError::AmountOutOfRange { .. } => "INVALID_AMOUNT",
            DomainError::UnknownProvider(_) => "UNKNOWN_PROVIDER",
            DomainError::IllegalTransition { .. } => "ILLEGAL_TRANSITION",
            DomainError::InvalidId { .. } | DomainError::InvalidText { .. } => "INVALID_FIELD",
        };
        let status = if matches!(error, DomainError::IllegalTransition { .. }) {
            StatusCode::CONFLICT
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> ApiError {
        let (status, code) = match &error {
            GatewayError::NotFound => (StatusCode::NOT_FOUND, "PG_PAYMENT_NOT_FOUND"),
            GatewayError::Transient(text) | GatewayError::UnknownOutcome(text)
                if text.contains("timed out") =>
            {
                (StatusCode::GATEWAY_TIMEOUT, "PG_TIMEOUT")
            }
            GatewayError::Transient(_)
            | GatewayError::UnknownOutcome(_)
            | GatewayError::Throttled(_) => (StatusCode::SERVICE_UNAVAILABLE, "PG_UNAVAILABLE"),
            GatewayError::BalanceMismatch(_) => (StatusCode::CONFLICT, "PG_BALANCE_DIFFERS"),
            GatewayError::Refused { .. } => (StatusCode::BAD_GATEWAY, "PG_REFUSED"),
            GatewayError::AlreadyCancelled => (StatusCode::CONFLICT, "PG_ALREADY_CANCELLED"),
            GatewayError::Credentials(_) => (StatusCode::BAD_GATEWAY, "PG_CREDENTIALS"),
            GatewayError::BadResponse(_) => (StatusCode::BAD_GATEWAY, "PG_BAD_RESPONSE"),
        };
        tracing::warn!(error = %error, "PG call failed");
        ApiError::new(
            status,
            code,
            format!("{error}; nothing was stored as paid, try again later"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        if matches!(error, StoreError::Closed) {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SHUTTING_DOWN",
                "kassa is shutting down; try again shortly",
            );
        }
        if matches!(error, StoreError::Refused(_) | StoreError::NotCommitted(_)) {
            // The store logs its fault itself, once a minute; /healthz says it too.
            tracing::warn!(error = %error, "a write was not stored");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "kassa cannot store anything right now; nothing was changed, try again shortly",
            );
        }
        tracing::error!(error = ?error, "store failed");
        {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "an internal error happened; it has been logged",
            )
        }
    }
}

impl From<FlowError> for ApiError {
    fn from(error: FlowError) -> ApiError {
        match error {
            FlowError::Invalid(error) => error.into(),
            FlowError::NotFound { what } => ApiError::not_found(what),
            FlowError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            FlowError::Unprocessable { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            FlowError::TooMany { code, message } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            }
            FlowError::Gateway(error) => error.into(),
            FlowError::Store(error) => error.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match rejection {
            JsonRejection::JsonDataError(error) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_FIELD",
                clip(&error.body_text()),
            ),
            JsonRejection::JsonSyntaxError(error) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                clip(&error.body_text()),
            ),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(rejection) => rejection.into(),
            other => ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                clip(&other.body_text()),
            ),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the body is larger than {} bytes", super::BODY_BYTES_MAX),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_BODY",
                clip(&rejection.body_text()),
            )
        }
    }
}

impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the body is larger than {} bytes", super::BODY_BYTES_MAX),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_FORM",
                clip(&rejection.body_text()),
            )
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
            clip(&rejection.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::invalid_query(clip(&rejection.body_text()))
    }
}

/// Error texts from extractors can quote the input; keep them short.
fn clip(text: &str) -> String {
    const MESSAGE_CHARS_MAX: usize = 300;
    text.chars().take(MESSAGE_CHARS_MAX).collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/error.html")]
struct ErrorPage {
    t: &'static Texts,
    message: String,
}

/// A page that explains what went wrong, with a status that says it too.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    lang: Lang,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, lang: Lang, message: impl Into<String>) -> PageError {
        PageError {
            status,
            lang,
            message: message.into(),
        }
    }

    pub fn not_found(lang: Lang) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, lang, lang.texts().not_found)
    }

    pub fn too_many_requests(lang: Lang) -> PageError {
        PageError::new(StatusCode::TOO_MANY_REQUESTS, lang, lang.texts().too_many)
    }

    pub fn from_flow(lang: Lang, error: &FlowError) -> PageError {
        match error {
            FlowError::NotFound { .. } => PageError::not_found(lang),
            FlowError::Invalid(_)
            | FlowError::Unprocessable { .. }
            | FlowError::Conflict { .. } => PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                lang,
                lang.texts().bad_request,
            ),
            FlowError::TooMany { .. } => PageError::too_many_requests(lang),
            FlowError::Gateway(_) | FlowError::Store(_) => {
                tracing::warn!(error = %error, "page could not be served");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    lang,
                    lang.texts().try_later,
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (
            self.status,
            ErrorPage {
                t: self.lang.texts(),
                message: self.message,
            },
        )
            .into_response()
    }
}
