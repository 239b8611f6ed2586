// Real Payple checkout: opens Payple's card window through its browser script. Payple posts the
// result to kassa's result URL, where kassa verifies it with Payple's result inquiry.
(function () {
  var button = document.getElementById("pay");
  if (!button || !window.PaypleCpayAuthCheck) return;
  var data = button.dataset;
  button.addEventListener("click", function () {
    window.PaypleCpayAuthCheck({
      clientKey: data.clientKey,
      PCD_PAY_TYPE: "card",
      PCD_PAY_WORK: "PAY",
      PCD_CARD_VER: "02",
      PCD_PAY_GOODS: data.name,
      PCD_PAY_TOTAL: Number(data.amount),
      PCD_PAY_OID: data.order,
      PCD_PAYER_EMAIL: data.email || undefined,
      PCD_RST_URL: data.result
    });
  });
})();
