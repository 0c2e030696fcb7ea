/* Dashboard behaviour, no build step and no inline scripts (a strict CSP can forbid them).
 *
 * - [data-live-url]: fetch the URL every data-live-interval ms and replace the element's content with
 *   the HTML fragment it returns. Stops once the fragment holds [data-final="true"] (a message that
 *   reached sent, failed or cancelled). Pauses while the tab is hidden.
 * - form[data-confirm]: ask before submitting.
 */
(function () {
  "use strict";

  function startLive(el) {
    var url = el.getAttribute("data-live-url");
    var interval = parseInt(el.getAttribute("data-live-interval"), 10) || 5000;
    var timer = null;
    var busy = false;

    function isFinal() {
      var marker = el.querySelector("[data-final]");
      return marker !== null && marker.getAttribute("data-final") === "true";
    }

    function tick() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (response.redirected || !response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          el.removeAttribute("data-live-error");
          if (isFinal()) { window.clearInterval(timer); el.setAttribute("data-live-done", "true"); }
        })
        .catch(function () { el.setAttribute("data-live-error", "true"); })
        .then(function () { busy = false; });
    }

    timer = window.setInterval(tick, interval);
  }

  function confirmSubmit(event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-url]").forEach(startLive);
    document.addEventListener("submit", confirmSubmit, true);
  });
})();
