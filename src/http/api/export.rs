//! `GET /api/admin/export/payments.csv?from=&to=`: every payment made within the KST days,
//! oldest first, one a row, as CSV in UTF-8 with a BOM (so spreadsheet programs read Korean).
//! The body is streamed chunk by chunk, so memory stays one chunk whatever the range holds.

use super::parse_date;
use crate::domain::PaymentId;
use crate::http::error::ApiError;
use crate::http::extract::{Admin, ApiQuery};
use crate::http::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use chrono_tz::Asia::Seoul;
use serde::Deserialize;

const BOM: &[u8] = b"\xEF\xBB\xBF";
pub const EXPORT_HEADER: [&str; 13] = [
    "payment_id",
    "order_id",
    "product",
    "provider",
    "pg_tid",
    "status",
    "amount",
    "cancelled_amount",
    "balance",
    "paid_at",
    "buyer_email",
    "partner_id",
    "settlement_status",
];

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// A cell a spreadsheet would read as a formula is written as text (OWASP's CSV injection).
fn cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn rows_csv(
    rows: &[(
        crate::domain::Payment,
        Option<crate::store::OrderDetails>,
        Option<&'static str>,
    )],
    with_header: bool,
) -> Result<Vec<u8>, csv::Error> {
    let mut out = Vec::with_capacity(rows.len() * 200 + BOM.len());
    if with_header {
        out.extend_from_slice(BOM);
    }
    let mut writer = csv::Writer::from_writer(out);
    if with_header {
        writer.write_record(EXPORT_HEADER)?;
    }
    for (payment, details, settlement) in rows {
        let name = details.as_ref().map_or("", |d| d.name.as_str());
        let email = details
            .as_ref()
            .and_then(|d| d.buyer_email.as_deref())
            .unwrap_or("");
        writer.write_record([
            payment.id.to_string().as_str(),
            &cell(payment.order_id.as_str()),
            &cell(name),
            payment.provider.as_str(),
            &cell(payment.pg_tid.as_str()),
            payment.status().as_str(),
            &payment.amount.won().to_string(),
            &payment.cancelled_amount().won().to_string(),
            &payment.balance().won().to_string(),
            &payment.paid_at.with_timezone(&Seoul).to_rfc3339(),
            &cell(email),
            &cell(payment.partner_id.as_ref().map_or("", |id| id.as_str())),
            settlement.unwrap_or(""),
        ])?;
    }
    writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))
}

struct Cursor {
    state: AppState,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    after: Option<PaymentId>,
    first: bool,
    done: bool,
}

pub async fn export_payments(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let from = parse_date("from", query.from.as_deref())?;
    let to = parse_date("to", query.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(ApiError::invalid_query("from is after to"));
    }
    let start = Cursor {
        state,
        from,
        to,
        after: None,
        first: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        let chunk = cursor
            .state
            .kassa
            .store
            .export_chunk(cursor.from, cursor.to, cursor.after)
            .await;
        let rows = match chunk {
            Ok(rows) => rows,
            Err(error) => {
                // The status line is gone; a cut body is what a client can still be told.
                tracing::error!(error = %error, "the payment export stopped: the store failed");
                cursor.done = true;
                return Some((Err(std::io::Error::other("the store failed")), cursor));
            }
        };
        cursor.done = rows.len() < crate::store::EXPORT_CHUNK_ROWS;
        cursor.after = rows.last().map(|(payment, _, _)| payment.id);
        let bytes = rows_csv(&rows, cursor.first).map_err(std::io::Error::other);
        cursor.first = false;
        Some((bytes.map(Bytes::from), cursor))
    });
    let name = format!(
        "attachment; filename=\"payments-{}-{}.csv\"",
        from.map_or_else(|| "start".to_owned(), |d| d.to_string()),
        to.map_or_else(|| "now".to_owned(), |d| d.to_string())
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
