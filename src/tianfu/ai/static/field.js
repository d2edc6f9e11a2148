// Field performance of one model: volume and clinicians' agreement over time, and input drift (ECharts).
(function () {
  "use strict";
  function draw() {
    if (typeof echarts === "undefined") return;
    var dataEl = document.getElementById("field-data");
    if (!dataEl) return;
    var s = JSON.parse(dataEl.textContent);
    var zh = document.documentElement.lang.indexOf("zh") === 0;
    var t = function (zhText, enText) { return zh ? zhText : enText; };

    var days = s.series.map(function (p) { return p.start; });
    var agreement = document.getElementById("field-agreement");
    if (agreement) {
      echarts.init(agreement, null, { renderer: "svg" }).setOption({
        animation: false,
        title: { text: t("使用量与医生认可率", "Volume and clinicians' agreement"), textStyle: { fontSize: 13 } },
        tooltip: { trigger: "axis" },
        legend: { top: 22, data: [t("输出数", "Outputs"), t("认可率", "Agreement")] },
        grid: { left: 48, right: 48, top: 56, bottom: 28 },
        xAxis: { type: "category", data: days },
        yAxis: [
          { type: "value", name: t("输出", "outputs"), minInterval: 1 },
          { type: "value", name: "%", min: 0, max: 100, splitLine: { show: false } }
        ],
        series: [
          { type: "bar", name: t("输出数", "Outputs"), data: s.series.map(function (p) { return p.outputs; }),
            itemStyle: { color: "#9cc2ea" } },
          { type: "line", name: t("认可率", "Agreement"), yAxisIndex: 1, connectNulls: true,
            data: s.series.map(function (p) { return p.agreement_rate === null ? null : +(100 * p.agreement_rate).toFixed(1); }),
            itemStyle: { color: "#0b5cad" } }
        ]
      });
    }

    var drift = document.getElementById("field-drift");
    if (drift) {
      var names = s.drift.map(function (d) { return d.name; });
      echarts.init(drift, null, { renderer: "svg" }).setOption({
        animation: false,
        title: { text: t("输入漂移 (PSI)", "Input drift (PSI)"), textStyle: { fontSize: 13 } },
        tooltip: { trigger: "axis", formatter: function (items) {
          var d = s.drift[items[0].dataIndex];
          return d.name + "<br>PSI " + (d.psi === null ? "—" : d.psi.toFixed(3)) + " · n " + d.n;
        } },
        grid: { left: 110, right: 24, top: 40, bottom: 28 },
        xAxis: { type: "value", min: 0 },
        yAxis: { type: "category", data: names },
        series: [{
          type: "bar",
          data: s.drift.map(function (d) {
            var color = d.level === "major" ? "#d0342c" : d.level === "moderate" ? "#d4a72c" : "#2da44e";
            return { value: d.psi === null ? 0 : +d.psi.toFixed(4), itemStyle: { color: d.psi === null ? "#c9d1d9" : color } };
          }),
          markLine: { symbol: "none", lineStyle: { color: "#d0342c", type: "dashed" },
            data: [{ xAxis: 0.1 }, { xAxis: 0.25 }], label: { formatter: "{c}" } }
        }],
        graphic: names.length ? [] : [{ type: "text", left: "center", top: "middle",
          style: { text: t("该模型未记录可比较的输入", "This model records no comparable inputs"), fill: "#8b949e" } }]
      });
    }
  }
  document.addEventListener("DOMContentLoaded", draw);
})();
