// The validation report is its own document (framed, scripts off); grow the frame to its full height.
(function () {
  "use strict";
  function fit(frame) {
    try {
      var doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = (doc.documentElement.scrollHeight + 24) + "px";
    } catch (e) { /* not readable: keep the default height */ }
  }
  function attach() {
    document.querySelectorAll("iframe.report").forEach(function (frame) {
      frame.addEventListener("load", function () { fit(frame); });
      fit(frame);
    });
  }
  document.addEventListener("DOMContentLoaded", attach);
  document.addEventListener("htmx:afterSwap", attach);
})();
