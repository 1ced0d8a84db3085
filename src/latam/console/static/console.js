/* latam web console: the little the pages need beyond htmx.
   - every htmx request carries the session's CSRF token (X-CSRF-Token);
   - charts: each [data-chart] element is drawn with uPlot (its table stays beside it);
   - the live tail: #tail-pause stops the polling and keeps the last cursor, resuming
     goes on from it; at most data-limit messages stay on the page;
   - #copy-key copies the new API key with the clipboard API.
   No eval, no inline script or style: the Content-Security-Policy allows neither. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  // -- charts -------------------------------------------------------------------------
  var charts = [];

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function chartSize(element) {
    return { width: Math.max(element.clientWidth, 240), height: Math.max(element.clientHeight, 200) };
  }

  // Half a bucket on each side, so the first and last bars are drawn whole.
  function paddedRange(xs) {
    var half = xs.length > 1 ? (xs[1] - xs[0]) / 2 : 30;
    return function (plot, min, max) {
      return [min - half, max + half];
    };
  }

  function drawChart(element) {
    if (!window.uPlot || element.dataset.drawn) {
      return;
    }
    var data;
    try {
      data = JSON.parse(element.getAttribute("data-chart"));
    } catch (error) {
      return;
    }
    var fg = cssVar("--fg", "#0f172a");
    var line = cssVar("--line", "#cbd5e1");
    var colour = cssVar("--chart", "#2563eb");
    var size = chartSize(element);
    var axis = { stroke: fg, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    var series = {
      label: data.label, stroke: colour, fill: colour + "55", width: 2, points: { show: false }
    };
    if (uPlot.paths && uPlot.paths.bars) {
      series.paths = uPlot.paths.bars({ size: [0.8, 60] });
    }
    var options = {
      width: size.width,
      height: size.height,
      legend: { show: false },
      scales: { x: { time: true, range: paddedRange(data.x) } },
      axes: [axis, axis],
      series: [{}, series]
    };
    if (uPlot.tzDate) {
      options.tzDate = function (seconds) {
        return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC");
      };
    }
    element.dataset.drawn = "1";
    charts.push({ element: element, plot: new uPlot(options, [data.x, data.y], element) });
  }

  function drawCharts(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var found = scope.querySelectorAll("[data-chart]");
    for (var i = 0; i < found.length; i++) {
      drawChart(found[i]);
    }
    if (scope.matches && scope.matches("[data-chart]")) {
      drawChart(scope);
    }
  }

  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () {
      charts = charts.filter(function (chart) {
        if (!document.body.contains(chart.element)) {
          chart.plot.destroy();
          return false;
        }
        chart.plot.setSize(chartSize(chart.element));
        return true;
      });
    }, 150);
  });

  // -- the live tail ------------------------------------------------------------------
  function pauseTail(button) {
    var tail = document.getElementById("tail");
    var poller = document.getElementById("tail-poller");
    if (poller) {
      if (window.htmx) {
        htmx.trigger(poller, "htmx:abort");
      }
      tail.dataset.resume = poller.getAttribute("hx-get");
      tail.dataset.trigger = (poller.getAttribute("hx-trigger") || "").replace(/^load,\s*/, "");
      poller.remove();
    }
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Resume";
  }

  function resumeTail(button) {
    var tail = document.getElementById("tail");
    if (tail.dataset.resume && !document.getElementById("tail-poller")) {
      var poller = document.createElement("div");
      poller.id = "tail-poller";
      poller.setAttribute("hx-get", tail.dataset.resume);
      poller.setAttribute("hx-trigger", "load, " + (tail.dataset.trigger || "every 2s"));
      poller.setAttribute("hx-swap", "outerHTML");
      tail.appendChild(poller);
      if (window.htmx) {
        htmx.process(poller);
      }
    }
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Pause";
  }

  function trimTail() {
    var tail = document.getElementById("tail");
    if (!tail) {
      return;
    }
    var limit = parseInt(tail.dataset.limit || "200", 10);
    var rows = tail.querySelectorAll(":scope > [data-message-id]");
    for (var i = 0; i < rows.length - limit; i++) {
      rows[i].remove();
    }
  }

  var tailAtBottom = true;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var tail = document.getElementById("tail");
    if (tail && event.detail.target && event.detail.target.id === "tail-poller") {
      tailAtBottom = tail.scrollHeight - tail.scrollTop - tail.clientHeight < 24;
    }
  });
  document.addEventListener("htmx:afterSettle", function () {
    var tail = document.getElementById("tail");
    if (tail) {
      trimTail();
      if (tailAtBottom) {
        tail.scrollTop = tail.scrollHeight;
      }
    }
  });

  // -- copying the new key ------------------------------------------------------------
  function say(text) {
    var status = document.getElementById("copy-status");
    if (status) {
      status.textContent = text;
    }
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    say("Selected: press Ctrl+C (or \u2318C) to copy.");
  }

  function copyFrom(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) {
      return;
    }
    var text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { say("Copied."); },
        function () { selectText(source); }
      );
    } else {
      selectText(source);
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("button") : null;
    if (!target) {
      return;
    }
    if (target.id === "tail-pause") {
      if (target.getAttribute("aria-pressed") === "true") {
        resumeTail(target);
      } else {
        pauseTail(target);
      }
    } else if (target.id === "copy-key") {
      copyFrom(target);
    }
  });

  if (window.htmx) {
    htmx.onLoad(drawCharts);
  } else {
    document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  }
})();
