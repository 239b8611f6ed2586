// Keeps the result page current: while the outcome is pending it asks kassa to verify the
// payment with the PG (in case the first try failed) and long-polls for the outcome.
(function () {
  var box = document.getElementById("result");
  if (!box) return;
  var texts = JSON.parse(document.getElementById("result-texts").textContent || "{}");
  var order = box.dataset.order, impUid = box.dataset.impUid;
  var finals = ["PAID", "CANCELLED", "CANCEL_FAILED", "ROLLBACK_REFUNDED", "ROLLBACK_FAILED", "SYSTEM_ERROR"];
  var delay = 1000, verifyTries = 0;

  function show(result) {
    box.dataset.result = result;
    var text = document.getElementById("result-text");
    text.textContent = texts[result] || result;
    text.className = "outcome " + result;
    document.getElementById("result-code").textContent = result;
  }

  function verify() {
    if (!impUid || verifyTries >= 5) return Promise.resolve();
    verifyTries += 1;
    return fetch("/api/payment/portone", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ imp_uid: impUid, merchant_uid: order })
    }).catch(function () {});
  }

  function poll() {
    fetch("/api/payments/result/" + encodeURIComponent(order) + "?wait_s=25")
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) {
        show(body.result);
        delay = 1000;
        if (finals.indexOf(body.result) < 0) {
          (body.result === "PENDING" ? verify() : Promise.resolve()).then(poll);
        }
      })
      .catch(function () { delay = Math.min(delay * 2, 30000); setTimeout(poll, delay); });
  }

  if (finals.indexOf(box.dataset.result) < 0) {
    (box.dataset.result === "PENDING" ? verify() : Promise.resolve()).then(poll);
  }
})();
