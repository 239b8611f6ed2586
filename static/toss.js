// Real Toss Payments checkout: opens Toss's payment window through its v2 browser SDK. Toss
// sends the buyer to kassa's success URL, where kassa confirms with the order's own amount.
(function () {
  var button = document.getElementById("pay");
  if (!button || !window.TossPayments) return;
  var data = button.dataset;
  var payment = window.TossPayments(data.clientKey).payment({ customerKey: window.TossPayments.ANONYMOUS });
  button.addEventListener("click", function () {
    payment.requestPayment({
      method: "CARD",
      amount: { currency: "KRW", value: Number(data.amount) },
      orderId: data.order,
      orderName: data.name,
      customerEmail: data.email || undefined,
      successUrl: data.success,
      failUrl: data.fail
    }).catch(function () {
      location.href = "/payment/" + encodeURIComponent(data.order) + "?failed=1";
    });
  });
})();
