/*
 * hashsvc scan page: "Reveal" swaps one candidate's blurred thumbnail for the clear one (the
 * server records each reveal in the audit log) and "Blur again" swaps it back, without
 * reloading the page. Without JavaScript the same links reload the page instead.
 */
(function () {
  "use strict";

  document.querySelectorAll("a.reveal-toggle").forEach(function (link) {
    link.addEventListener("click", function (event) {
      const img = document.getElementById(link.dataset.target);
      if (!img) return;
      event.preventDefault();
      const reveal = link.dataset.state !== "revealed";
      img.src = reveal ? link.dataset.revealed : link.dataset.blurred;
      img.alt = img.alt.replace(/^(Blurred preview|Preview)/, reveal ? "Preview" : "Blurred preview");
      link.dataset.state = reveal ? "revealed" : "blurred";
      link.setAttribute("aria-pressed", reveal ? "true" : "false");
      link.textContent = reveal ? "Blur again" : "Reveal";
    });
    // A link acting as a button also answers the space bar.
    link.addEventListener("keydown", function (event) {
      if (event.key === " ") {
        event.preventDefault();
        link.click();
      }
    });
  });
})();
