// Keeps the result page current without reloads. While the outcome is pending it asks kassa to
// verify the payment with the PG again (1 s, 2 s, 4 s, ... apart, at most 6 times), in case the
// return from the PG window found the PG down, and it long-polls for the outcome, which answers
// the moment the outcome changes. It backs off when told to wait (429) or answered at once.
(function () {
  var box = document.getElementById("result");
  if (!box) return;
  var texts = JSON.parse(document.getElementById("result-texts").textContent || "{}");
  var order = box.dataset.order, key = box.dataset.key, provider = box.dataset.provider;
  var finals = ["PAID", "CANCELLED", "CANCEL_UNKNOWN", "CANCEL_FAILED", "ROLLBACK_UNKNOWN", "ROLLBACK_REFUNDED", "ROLLBACK_FAILED", "EXPIRED", "SYSTEM_ERROR"];
  var pollDelay = 1000, verifyDelay = 1000, verifyTries = 0;

  function isFinal() { return finals.indexOf(box.dataset.result) >= 0; }

  function show(result) {
    box.dataset.result = result;
    var text = document.getElementById("result-text");
    text.textContent = texts[result] || result;
    text.className = "outcome " + result;
    document.getElementById("result-code").textContent = result;
  }

  // What asks kassa to verify the payment with its PG again, per PG.
  function verifyUrl() {
    if (provider === "toss") return "/api/payment/toss/confirm";
    if (provider === "payple") return "/api/payment/payple/result";
    return "/api/payment/portone";
  }

  function verifyRequest() {
    if (provider === "payple") {
      // The reference is {pay type}.{yyyyMMdd}.{order id}: the fields Payple's inquiry needs.
      var parts = key.split(".");
      var form = new URLSearchParams({ PCD_PAY_RST: "success", PCD_PAY_TYPE: parts[0], PCD_PAY_TIME: parts[1] + "000000", PCD_PAY_OID: order });
      return { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" }, body: form.toString() };
    }
    var body = provider === "toss"
      ? { paymentKey: key, orderId: order, amount: Number(box.dataset.amount) }
      : { imp_uid: key, merchant_uid: order };
    return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }

  function verify() {
    if (!key || isFinal() || box.dataset.result !== "PENDING" || verifyTries >= 6) return;
    verifyTries += 1;
    fetch(verifyUrl(), verifyRequest()).catch(function () {}).then(function () {
      verifyDelay *= 2;
      setTimeout(verify, verifyDelay);
    });
  }

  // Waits before the next poll: what a 429's Retry-After says, else a delay that doubles (up to
  // 30 s) while kassa answers at once (when it is too busy to hold the request) or fails.
  function pollLater(retryAfter) {
    var wait = retryAfter > 0 ? retryAfter * 1000 : pollDelay;
    pollDelay = Math.min(pollDelay * 2, 30000);
    setTimeout(poll, wait);
  }

  function poll() {
    var started = Date.now();
    fetch("/api/payments/result/" + encodeURIComponent(order) + "?wait_s=25")
      .then(function (response) {
        if (response.status === 429) return Promise.reject(Number(response.headers.get("Retry-After")) || 0);
        return response.ok ? response.json() : Promise.reject(0);
      })
      .then(function (body) {
        show(body.result);
        if (isFinal()) return;
        if (Date.now() - started < 1000) { pollLater(0); return; }
        pollDelay = 1000;
        poll();
      })
      .catch(function (retryAfter) { pollLater(typeof retryAfter === "number" ? retryAfter : 0); });
  }

  if (!isFinal()) {
    verify();
    poll();
  }
})();
