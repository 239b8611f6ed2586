//! Money as an integer number of won. KRW has no minor unit, so one won is the minor unit.
//!
//! Invariant: an `Amount` is never negative and never above `AMOUNT_WON_MAX`; arithmetic is
//! checked and answers `None` rather than wrapping.

use super::DomainError;

/// The largest amount kassa accepts for one order or payment: ten billion won. Far above any
/// card limit, far below `i64::MAX`, so sums of many payments cannot overflow.
pub const AMOUNT_WON_MAX: i64 = 10_000_000_000;

/// A non-negative number of won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// An amount that can be charged: at least one won.
    pub fn positive(won: i64) -> Result<Amount, DomainError> {
        if (1..=AMOUNT_WON_MAX).contains(&won) {
            Ok(Amount(won))
        } else {
            Err(DomainError::AmountOutOfRange {
                min: 1,
                max: AMOUNT_WON_MAX,
                got: won,
            })
        }
    }

    /// Any amount from zero, such as a cancelled total.
    pub fn non_negative(won: i64) -> Result<Amount, DomainError> {
        if (0..=AMOUNT_WON_MAX).contains(&won) {
            Ok(Amount(won))
        } else {
            Err(DomainError::AmountOutOfRange {
                min: 0,
                max: AMOUNT_WON_MAX,
                got: won,
            })
        }
    }

    pub fn won(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_add(other.0)
            .and_then(|won| Amount::non_negative(won).ok())
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_sub(other.0)
            .and_then(|won| Amount::non_negative(won).ok())
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} KRW", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positive_amounts_refuse_zero_negative_and_absurd_values() {
        assert!(Amount::positive(0).is_err());
        assert!(Amount::positive(-1).is_err());
        assert!(Amount::positive(AMOUNT_WON_MAX + 1).is_err());
        assert!(Amount::positive(i64::MAX).is_err());
        assert_eq!(Amount::positive(15_000).map(Amount::won), Ok(15_000));
        assert_eq!(Amount::non_negative(0), Ok(Amount::ZERO));
    }

    proptest! {
        #[test]
        fn arithmetic_never_leaves_the_valid_range(a in 0..=AMOUNT_WON_MAX, b in 0..=AMOUNT_WON_MAX) {
            let (a, b) = (Amount::non_negative(a).unwrap(), Amount::non_negative(b).unwrap());
            if let Some(sum) = a.checked_add(b) {
                prop_assert!(sum.won() <= AMOUNT_WON_MAX);
                prop_assert_eq!(sum.checked_sub(b), Some(a));
            } else {
                prop_assert!(a.won() + b.won() > AMOUNT_WON_MAX);
            }
            match a.checked_sub(b) {
                Some(diff) => prop_assert_eq!(diff.won(), a.won() - b.won()),
                None => prop_assert!(a < b),
            }
        }
    }
}
