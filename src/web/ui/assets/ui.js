// tracecov web UI: the little script the pages use. It only reads the DOM and the JSON API; it
// never builds markup from text (no innerHTML), so nothing from a span can become code here.
(function () {
  "use strict";

  // A run that is still open: poll the API and reload when the run changed or closed.
  var body = document.body;
  var run = body.getAttribute("data-poll-run");
  if (run) {
    var last = body.getAttribute("data-last-ns");
    var tick = function () {
      fetch("/api/runs/" + encodeURIComponent(run), { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (j && (String(j.last_ns) !== last || !j.open)) {
            window.location.reload();
          } else {
            window.setTimeout(tick, 3000);
          }
        })
        .catch(function () { window.setTimeout(tick, 5000); });
    };
    window.setTimeout(tick, 3000);
  }

  // Filter forms apply as soon as a choice changes.
  document.querySelectorAll("form.filters select, form.filters input[type=checkbox]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });

  // Copy buttons: data-copy names the element whose text is copied.
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var src = document.getElementById(btn.getAttribute("data-copy"));
      if (!src) { return; }
      var done = function () { btn.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(src.textContent).then(done, function () { select(src); });
      } else {
        select(src);
        try { document.execCommand("copy"); done(); } catch (e) { /* selected for a manual copy */ }
      }
    });
  });
  function select(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  // The trace view: bring the span named by ?span= into view.
  var selected = document.querySelector(".wf-row.selected");
  if (selected) { selected.scrollIntoView({ block: "center" }); }
})();
