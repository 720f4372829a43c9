/*
 * hashsvc: live progress of scans. Each element with data-progress-url is refreshed from that
 * same-origin JSON route every two seconds until its scan has finished; with
 * data-reload-when-done the page reloads then, to show the scan's candidates.
 */
(function () {
  "use strict";

  const FINISHED = ["done", "failed", "cancelled"];
  const INTERVAL_MS = 2000;

  function update(box, scan) {
    box.querySelectorAll("[data-field]").forEach(function (el) {
      const value = scan[el.dataset.field];
      if (value === undefined || value === null) return;
      el.textContent = String(value);
      if (el.dataset.field === "state") el.className = "state state-" + value;
    });
    const bar = box.querySelector("[data-field-progress]");
    if (bar) {
      bar.max = Math.max(scan.files_enumerated || 0, 1);
      bar.value = scan.files_done || 0;
      bar.textContent = (scan.files_done || 0) + " of " + (scan.files_enumerated || 0);
    }
    box.dataset.state = scan.state;
  }

  function follow(box) {
    if (FINISHED.indexOf(box.dataset.state) >= 0) return;
    const url = box.dataset.progressUrl;
    async function poll() {
      let scan;
      try {
        const response = await fetch(url, {credentials: "same-origin", cache: "no-store",
          headers: {"Accept": "application/json"}});
        if (!response.ok) return; // signed out or gone: stop quietly
        scan = await response.json();
      } catch (err) {
        window.setTimeout(poll, INTERVAL_MS * 2);
        return;
      }
      update(box, scan);
      if (FINISHED.indexOf(scan.state) >= 0) {
        if (box.dataset.reloadWhenDone) window.location.reload();
        return;
      }
      window.setTimeout(poll, INTERVAL_MS);
    }
    window.setTimeout(poll, INTERVAL_MS);
  }

  document.querySelectorAll("[data-progress-url]").forEach(follow);
})();
