// Real PortOne checkout: opens PortOne's window through its browser SDK, then hands the result
// to kassa, which verifies it with PortOne before storing anything.
(function () {
  var button = document.getElementById("pay");
  if (!button || !window.IMP) return;
  var data = button.dataset;
  window.IMP.init(data.impCode);
  button.addEventListener("click", function () {
    window.IMP.request_pay({
      pg: data.pg,
      pay_method: "card",
      merchant_uid: data.order,
      name: data.name,
      amount: Number(data.amount),
      buyer_email: data.email || undefined,
      m_redirect_url: data.return
    }, function (response) {
      if (!response.success && !response.imp_uid) {
        location.href = "/payment/" + encodeURIComponent(data.order) + "?failed=1";
        return;
      }
      var query = "?imp_uid=" + encodeURIComponent(response.imp_uid) +
        "&merchant_uid=" + encodeURIComponent(data.order) + "&imp_success=" + (response.success ? "true" : "false");
      location.href = "/payment/portone/return" + query;
    });
  });
})();
