//! Page texts in Korean (the default) and English (when the browser prefers it).

use axum::http::{HeaderMap, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    /// The language the browser prefers among the two kassa speaks; Korean when it says nothing.
    pub fn from_headers(headers: &HeaderMap) -> Lang {
        let Some(accept) = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
        else {
            return Lang::Ko;
        };
        let mut best = (Lang::Ko, -1.0_f32);
        for item in accept.split(',').take(20) {
            let mut parts = item.trim().split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag.starts_with("ko") {
                Lang::Ko
            } else if tag.starts_with("en") {
                Lang::En
            } else {
                continue;
            };
            if quality > best.1 {
                best = (lang, quality);
            }
        }
        best.0
    }

    /// One of two texts written side by side in a template: Korean, or English.
    pub fn t(self, ko: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Ko => ko,
            Lang::En => en,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::Ko => &KO,
            Lang::En => &EN,
        }
    }
}

#[derive(Debug)]
pub struct Texts {
    pub code: &'static str,
    pub shop: &'static str,
    pub products: &'static str,
    pub buy: &'static str,
    pub my_payments: &'static str,
    pub order: &'static str,
    pub amount: &'static str,
    pub pay: &'static str,
    pub already_paid: &'static str,
    pub see_result: &'static str,
    pub pay_failed: &'static str,
    pub sandbox_note: &'static str,
    pub result_title: &'static str,
    pub waiting: &'static str,
    pub no_payments: &'static str,
    pub status: &'static str,
    pub paid_at: &'static str,
    pub back_to_shop: &'static str,
    pub error_title: &'static str,
    pub not_found: &'static str,
    pub bad_request: &'static str,
    pub try_later: &'static str,
    pub too_many: &'static str,
    pub cancel: &'static str,
    pub results: [(&'static str, &'static str); 12],
    pub statuses: [(&'static str, &'static str); 10],
}

impl Texts {
    pub fn result(&self, code: &str) -> &'static str {
        self.results
            .iter()
            .find(|(key, _)| *key == code)
            .map_or("", |(_, text)| text)
    }

    pub fn status(&self, code: &str) -> &'static str {
        self.statuses
            .iter()
            .find(|(key, _)| *key == code)
            .map_or("", |(_, text)| text)
    }
}

pub static KO: Texts = Texts {
    code: "ko",
    shop: "kassa 상점",
    products: "상품",
    buy: "구매하기",
    my_payments: "내 결제내역",
    order: "주문",
    amount: "금액",
    pay: "결제하기",
    already_paid: "이미 결제된 주문입니다.",
    see_result: "결제 결과 보기",
    pay_failed: "결제가 완료되지 않았습니다. 다시 시도해 주세요.",
    sandbox_note: "샌드박스 모드: 테스트 결제창이 열리며 실제 돈은 오가지 않습니다.",
    result_title: "결제 결과",
    waiting: "결제를 확인하고 있습니다…",
    no_payments: "이 기기에서 결제한 내역이 없습니다.",
    status: "상태",
    paid_at: "결제일시",
    back_to_shop: "상점으로 돌아가기",
    error_title: "문제가 생겼습니다",
    not_found: "찾을 수 없는 페이지나 주문입니다.",
    bad_request: "요청이 올바르지 않습니다.",
    try_later: "잠시 후 다시 시도해 주세요.",
    too_many: "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
    cancel: "결제 취소",
    results: [
        ("PENDING", "결제를 확인하고 있습니다…"),
        ("PAID", "결제가 완료되었습니다."),
        ("CANCELLED", "결제가 취소되었습니다."),
        ("CANCEL_PENDING", "취소를 처리하고 있습니다…"),
        (
            "CANCEL_UNKNOWN",
            "환불 결과를 확인하고 있습니다. 확인되면 반영됩니다.",
        ),
        (
            "CANCEL_FAILED",
            "취소를 처리하지 못했습니다. 상점에서 확인 중입니다.",
        ),
        (
            "ROLLBACK_PENDING",
            "결제 금액이 주문과 달라 환불을 진행하고 있습니다…",
        ),
        (
            "ROLLBACK_UNKNOWN",
            "결제 금액이 주문과 달라 환불했으며, 환불 결과를 확인하고 있습니다.",
        ),
        (
            "ROLLBACK_REFUNDED",
            "결제가 주문과 맞지 않아 전액 환불되었습니다.",
        ),
        (
            "ROLLBACK_FAILED",
            "환불을 처리하지 못했습니다. 상점에서 확인 중입니다.",
        ),
        ("EXPIRED", "결제되지 않은 채 기한이 지난 주문입니다."),
        (
            "SYSTEM_ERROR",
            "일시적인 오류가 발생했습니다. 상점에 문의해 주세요.",
        ),
    ],
    statuses: [
        ("PAID", "결제완료"),
        ("CANCEL_REQUESTED", "취소요청"),
        ("PARTIALLY_CANCELLED", "부분취소"),
        ("CANCELLED", "취소완료"),
        ("CANCEL_UNKNOWN", "환불확인중"),
        ("CANCEL_FAILED", "취소실패"),
        ("ROLLBACK_PENDING", "환불진행"),
        ("ROLLBACK_UNKNOWN", "환불확인중"),
        ("ROLLBACK_REFUNDED", "환불완료"),
        ("ROLLBACK_FAILED", "환불실패"),
    ],
};

pub static EN: Texts = Texts {
    code: "en",
    shop: "kassa shop",
    products: "Products",
    buy: "Buy",
    my_payments: "My payments",
    order: "Order",
    amount: "Amount",
    pay: "Pay",
    already_paid: "This order is already paid.",
    see_result: "See the result",
    pay_failed: "The payment was not completed. Please try again.",
    sandbox_note: "Sandbox mode: a test payment window opens and no real money moves.",
    result_title: "Payment result",
    waiting: "Checking your payment…",
    no_payments: "No payments from this device yet.",
    status: "Status",
    paid_at: "Paid at",
    back_to_shop: "Back to the shop",
    error_title: "Something went wrong",
    not_found: "This page or order does not exist.",
    bad_request: "The request is not valid.",
    try_later: "Please try again in a moment.",
    too_many: "Too many requests from this device. Please try again in a moment.",
    cancel: "Cancel payment",
    results: [
        ("PENDING", "Checking your payment…"),
        ("PAID", "Payment complete."),
        ("CANCELLED", "The payment was cancelled."),
        ("CANCEL_PENDING", "Processing the cancellation…"),
        (
            "CANCEL_UNKNOWN",
            "The refund is being checked; it shows here once confirmed.",
        ),
        (
            "CANCEL_FAILED",
            "The cancellation could not be processed; the shop is looking into it.",
        ),
        (
            "ROLLBACK_PENDING",
            "The amount did not match the order; refunding it…",
        ),
        (
            "ROLLBACK_UNKNOWN",
            "The amount did not match the order; the refund is being checked.",
        ),
        (
            "ROLLBACK_REFUNDED",
            "The amount did not match the order and was fully refunded.",
        ),
        (
            "ROLLBACK_FAILED",
            "The refund could not be processed; the shop is looking into it.",
        ),
        ("EXPIRED", "This order expired without being paid."),
        (
            "SYSTEM_ERROR",
            "A temporary error happened; please contact the shop.",
        ),
    ],
    statuses: [
        ("PAID", "Paid"),
        ("CANCEL_REQUESTED", "Cancel requested"),
        ("PARTIALLY_CANCELLED", "Partly cancelled"),
        ("CANCELLED", "Cancelled"),
        ("CANCEL_UNKNOWN", "Refund being checked"),
        ("CANCEL_FAILED", "Cancel failed"),
        ("ROLLBACK_PENDING", "Refunding"),
        ("ROLLBACK_UNKNOWN", "Refund being checked"),
        ("ROLLBACK_REFUNDED", "Refunded"),
        ("ROLLBACK_FAILED", "Refund failed"),
    ],
};

/// `15000` as `15,000원` or `₩15,000`.
pub fn format_won(lang: Lang, won: i64) -> String {
    let digits = won.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if won < 0 { "-" } else { "" };
    match lang {
        Lang::Ko => format!("{sign}{grouped}원"),
        Lang::En => format!("{sign}₩{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn korean_unless_the_browser_prefers_english() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::from_headers(&headers), Lang::Ko);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en-US,en;q=0.9,ko;q=0.8"),
        );
        assert_eq!(Lang::from_headers(&headers), Lang::En);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("ko-KR,ko;q=0.9,en;q=0.8"),
        );
        assert_eq!(Lang::from_headers(&headers), Lang::Ko);
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr-FR"));
        assert_eq!(Lang::from_headers(&headers), Lang::Ko);
    }

    #[test]
    fn won_is_grouped_by_thousands() {
        assert_eq!(format_won(Lang::Ko, 15_000), "15,000원");
        assert_eq!(format_won(Lang::En, 1_234_567), "₩1,234,567");
        assert_eq!(format_won(Lang::Ko, 900), "900원");
    }
}
