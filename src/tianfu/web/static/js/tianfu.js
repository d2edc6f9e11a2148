// Tianfu page behaviour. No inline scripts (the Content-Security-Policy forbids them): charts read their data
// from <script type="application/json"> blocks, and forms say what they need with data- attributes.
(function () {
  "use strict";

  function renderCharts(root) {
    if (typeof echarts === "undefined") return;
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.rendered) return;
      var source = document.getElementById(el.dataset.chart);
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      var chart = echarts.init(el, null, { renderer: "svg" });
      chart.setOption(buildOption(spec));
      el.dataset.rendered = "1";
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }

  var palette = ["#0b5cad", "#d0342c", "#0e9f8e", "#e07b00", "#7a8699"];

  function buildOption(spec) {
    var base = {
      color: spec.colors || palette,
      textStyle: { fontFamily: getComputedStyle(document.body).fontFamily },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: { top: 0, right: 0, itemWidth: 12, itemHeight: 12 },
      grid: { left: 40, right: 12, top: 36, bottom: 28, containLabel: true },
      xAxis: { type: "category", data: spec.categories, axisTick: { show: false } },
      yAxis: { type: "value", minInterval: 1, splitLine: { lineStyle: { color: "#e6ebf1" } } },
      series: spec.series.map(function (s) {
        return { name: s.name, type: spec.type || "bar", stack: spec.stacked ? "total" : undefined, data: s.data,
                 barMaxWidth: 36, itemStyle: s.color ? { color: s.color } : undefined };
      })
    };
    if (spec.horizontal) {
      var x = base.xAxis; base.xAxis = base.yAxis; base.yAxis = x;
    }
    return base;
  }

  // Selecting a ward narrows the bed choices to that ward's free beds.
  function wireBedPickers(root) {
    root.querySelectorAll("select[data-beds-for]").forEach(function (wardSelect) {
      var bedSelect = document.getElementById(wardSelect.dataset.bedsFor);
      var beds = JSON.parse(document.getElementById(wardSelect.dataset.bedsSource).textContent);
      function refresh() {
        var options = beds[wardSelect.value] || [];
        bedSelect.innerHTML = "";
        var none = document.createElement("option");
        none.value = ""; none.textContent = bedSelect.dataset.noneLabel || "—";
        bedSelect.appendChild(none);
        options.forEach(function (bed) {
          var o = document.createElement("option"); o.value = bed.id; o.textContent = bed.name; bedSelect.appendChild(o);
        });
      }
      wardSelect.addEventListener("change", refresh);
      refresh();
    });
  }

  // Buttons that ask before doing something consequential.
  document.addEventListener("submit", function (event) {
    var message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  function init(root) { renderCharts(root); wireBedPickers(root); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (event) { init(event.target); });
})();
