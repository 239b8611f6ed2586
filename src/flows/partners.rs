//! Daily partner settlement: what each partner is owed for a KST day.

use super::{FlowError, Kassa};
use crate::domain::settlement::PartnerSettlementStatus;
use crate::store::{PartnerSettlement, StatusChange};
use chrono::NaiveDate;

/// Computes (or recomputes, while REQUESTED) every partner's settlement for `date`.
pub async fn run(kassa: &Kassa, date: NaiveDate) -> Result<Vec<PartnerSettlement>, FlowError> {
    let partners = kassa
        .config
        .partners
        .iter()
        .map(|partner| (partner.id.clone(), partner.fee_rate_bps))
        .collect();
    let rows = kassa
        .store
        .run_partner_settlement(date, partners, kassa.env.now())
        .await?;
    let sum = |pick: fn(&PartnerSettlement) -> i64| rows.iter().map(pick).sum::<i64>();
    tracing::info!(
        date = %date,
        partners = rows.len(),
        gross = sum(|row| row.figures.gross),
        cancelled = sum(|row| row.figures.cancelled),
        fee = sum(|row| row.figures.fee),
        net = sum(|row| row.figures.net),
        "partner settlement computed"
    );
    Ok(rows)
}

/// Moves a settlement forward; `id` is `{date}:{partner}`.
pub async fn move_forward(
    kassa: &Kassa,
    id: &str,
    status: &str,
) -> Result<PartnerSettlement, FlowError> {
    let next = PartnerSettlementStatus::parse(status).ok_or(FlowError::Unprocessable {
        code: "INVALID_STATUS",
        message: "status must be PROCESSING or COMPLETED".into(),
    })?;
    let (date, partner) = id.split_once(':').ok_or(FlowError::NotFound {
        what: "partner settlement",
    })?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| FlowError::NotFound {
        what: "partner settlement",
    })?;
    match kassa
        .store
        .move_partner_settlement(date, partner.to_owned(), next, kassa.env.now())
        .await?
    {
        StatusChange::Changed(row) => {
            tracing::info!(id = %row.id(), status = row.status.as_str(), "partner settlement moved forward");
            Ok(row)
        }
        StatusChange::Refused { from } => Err(FlowError::Conflict {
            code: "ILLEGAL_TRANSITION",
            message: format!(
                "a partner settlement moves forward only; it is {}",
                from.as_str()
            ),
        }),
        StatusChange::NotFound => Err(FlowError::NotFound {
            what: "partner settlement",
        }),
    }
}
