// 24-hour trends of one patient: stacked charts sharing one time axis (ECharts).
(function () {
  "use strict";
  function draw() {
    var el = document.getElementById("trends");
    if (!el || typeof echarts === "undefined") return;
    var data = JSON.parse(document.getElementById("trend-data").textContent);
    var labels = JSON.parse(document.getElementById("trend-labels").textContent);
    var panels = [["heart_rate", "#2da44e"], ["spo2", "#1b7c83"], ["respiratory_rate", "#b08800"],
                  ["systolic_bp", "#0b5cad"], ["temperature", "#8250df"], ["news2", "#d0342c"]];
    var times = data.times.map(function (t) { return new Date(t).getTime(); });
    var panelHeight = 110, top = 26;  // room for each panel's name above its plot
    el.style.height = (panels.length * panelHeight + 30) + "px";
    var option = { animation: false, tooltip: { trigger: "axis" }, axisPointer: { link: [{ xAxisIndex: "all" }] },
      grid: [], xAxis: [], yAxis: [], series: [], title: [] };
    panels.forEach(function (p, i) {
      option.grid.push({ left: 60, right: 24, top: i * panelHeight + top, height: panelHeight - top - 8 });
      option.xAxis.push({ type: "time", gridIndex: i, axisLabel: { show: i === panels.length - 1 }, splitLine: { show: false } });
      option.yAxis.push({ type: "value", gridIndex: i, scale: true, name: labels[p[0]], nameGap: 8,
        nameTextStyle: { align: "left", fontWeight: "bold", color: p[1] },
        splitNumber: 2, splitLine: { lineStyle: { color: "#eef1f5" } } });
      var values = data.series[p[0]];
      option.series.push({ type: "line", step: p[0] === "news2" ? "end" : false,
        // Sparse series (temperature is charted every few hours) show their points, or nothing would show.
        xAxisIndex: i, yAxisIndex: i, showSymbol: values.filter(function (v) { return v !== null; }).length < 40,
        symbolSize: 4, name: labels[p[0]], lineStyle: { color: p[1], width: 1.5 },
        itemStyle: { color: p[1] }, connectNulls: false,
        data: times.map(function (t, k) { return [t, values[k]]; }) });
      if (p[0] === "systolic_bp") {
        option.series.push({ type: "line", xAxisIndex: i, yAxisIndex: i, showSymbol: false, name: labels.diastolic_bp,
          lineStyle: { color: "#7aa7d9", width: 1 }, itemStyle: { color: "#7aa7d9" },
          data: times.map(function (t, k) { return [t, data.series.diastolic_bp[k]]; }) });
      }
    });
    echarts.init(el, null, { renderer: "svg" }).setOption(option);
  }
  document.addEventListener("DOMContentLoaded", draw);
})();
