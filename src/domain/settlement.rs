//! Partner settlement rules: what one partner is owed for one KST day, and the forward-only life
//! of a partner settlement.
//!
//! Invariant: for every row, `fee + net == gross − cancelled`, and the rows of a day add up to
//! the day's totals; both are asserted before a run is committed.

/// Basis points in one whole (100 %).
pub const BPS_PER_WHOLE: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerSettlementStatus {
    Requested,
    Processing,
    Completed,
}

impl PartnerSettlementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerSettlementStatus::Requested => "REQUESTED",
            PartnerSettlementStatus::Processing => "PROCESSING",
            PartnerSettlementStatus::Completed => "COMPLETED",
        }
    }

    pub fn parse(raw: &str) -> Option<PartnerSettlementStatus> {
        [Self::Requested, Self::Processing, Self::Completed]
            .into_iter()
            .find(|status| status.as_str() == raw)
    }

    /// Forward only, one step at a time: REQUESTED → PROCESSING → COMPLETED.
    pub fn can_move_to(self, next: PartnerSettlementStatus) -> bool {
        matches!(
            (self, next),
            (Self::Requested, Self::Processing) | (Self::Processing, Self::Completed)
        )
    }
}

/// One partner's figures for one day, in won. `cancelled` counts refunds completed that day,
/// so a late refund lowers the day it happens and `net` may be negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartnerFigures {
    pub gross: i64,
    pub cancelled: i64,
    pub fee: i64,
    pub net: i64,
    pub payment_count: u64,
}

/// The fee on `base` won at `fee_rate_bps`, rounded down to the won, that is toward zero: on a
/// negative base (refunds above the day's sales) the fee given back is rounded down too.
pub fn fee(base: i64, fee_rate_bps: u32) -> i64 {
    let product = i128::from(base) * i128::from(fee_rate_bps);
    // Integer division in Rust truncates toward zero, which is "rounded down" for both signs of
    // the amount the partner is charged or given back.
    i64::try_from(product / i128::from(BPS_PER_WHOLE)).unwrap_or(0)
}

/// A partner's day from its sales and refunds.
pub fn figures(
    gross: i64,
    cancelled: i64,
    payment_count: u64,
    fee_rate_bps: u32,
) -> PartnerFigures {
    let base = gross - cancelled;
    let fee = fee(base, fee_rate_bps);
    let net = base - fee;
    debug_assert_eq!(fee + net, gross - cancelled);
    PartnerFigures {
        gross,
        cancelled,
        fee,
        net,
        payment_count,
    }
}

/// Whether a PG settlement line is a sale or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementKind {
    Approval,
    Cancel,
}

impl SettlementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementKind::Approval => "APPROVAL",
            SettlementKind::Cancel => "CANCEL",
        }
    }
}

/// One line of a PG's settlement: a payment's gross amount, the PG's fee and what it pays out.
/// Amounts are as the PG sent them (signed); kassa checks them, it does not trust them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementLine {
    pub kind: SettlementKind,
    pub order_id: String,
    pub amount: i64,
    pub fee: i64,
    pub settle_amount: i64,
    /// When the PG carried out the refund of a CANCEL line (Payple `PCD_PAY_CANCEL_TIME`,
    /// Toss `cancel.canceledAt`), when it says.
    pub cancel_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The PG payment the line is of, as kassa names PG payments (Toss `paymentKey`; Payple
    /// `{type}.{yyyyMMdd}.{order id}`), when the line says: what a payment kassa never heard of
    /// is asked about with.
    pub pg_ref: Option<String>,
    /// The PG's own id of the refund a CANCEL line is of (Toss `transactionKey`), when given.
    pub pg_cancel_id: Option<String>,
    /// How many lines alike in order, amount and time came before this one in its page: two
    /// refunds of one amount in the same second are two lines, and two refunds.
    pub occurrence: u32,
}

impl SettlementLine {
    /// A line is consistent when its gross minus its fee is what it pays out.
    pub fn is_consistent(&self) -> bool {
        self.amount.checked_sub(self.fee) == Some(self.settle_amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_is_rounded_down_to_the_won() {
        assert_eq!(fee(15_000, 330), 495);
        assert_eq!(fee(9_999, 330), 329); // 329.967
        assert_eq!(fee(1, 9_999), 0);
        assert_eq!(fee(0, 330), 0);
        assert_eq!(fee(-9_999, 330), -329);
        assert_eq!(fee(10_000_000_000, 10_000), 10_000_000_000);
    }

    #[test]
    fn fee_and_net_always_add_up_to_sales_minus_refunds() {
        for (gross, cancelled, bps) in [
            (15_000, 0, 330),
            (24_900, 9_900, 250),
            (0, 5_000, 330),
            (7, 3, 1),
        ] {
            let day = figures(gross, cancelled, 1, bps);
            assert_eq!(day.fee + day.net, gross - cancelled);
            assert!(day.fee.abs() <= (gross - cancelled).abs());
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fee_is_the_rate_rounded_toward_zero_and_fee_plus_net_is_the_base(
            gross in 0i64..=crate::domain::money::AMOUNT_WON_MAX,
            cancelled in 0i64..=crate::domain::money::AMOUNT_WON_MAX,
            bps in 0u32..=10_000,
        ) {
            let day = figures(gross, cancelled, 1, bps);
            let base = gross - cancelled;
            proptest::prop_assert_eq!(day.fee + day.net, base);
            let exact = i128::from(base) * i128::from(bps);
            // Rounded toward zero: never more than the exact fee in size, and less than a won off.
            proptest::prop_assert!(i128::from(day.fee).abs() * 10_000 <= exact.abs());
            proptest::prop_assert!(exact.abs() - i128::from(day.fee).abs() * 10_000 < 10_000);
            proptest::prop_assert!(day.fee == 0 || day.fee.signum() == base.signum());
            // More sales never lower the fee.
            proptest::prop_assert!(fee(base.saturating_add(1), bps) >= day.fee);
        }
    }

    #[test]
    fn a_settlement_only_moves_forward_one_step_at_a_time() {
        use PartnerSettlementStatus as S;
        let all = [S::Requested, S::Processing, S::Completed];
        for from in all {
            for to in all {
                let forward = matches!(
                    (from, to),
                    (S::Requested, S::Processing) | (S::Processing, S::Completed)
                );
                assert_eq!(from.can_move_to(to), forward, "{from:?} -> {to:?}");
            }
        }
    }
}
