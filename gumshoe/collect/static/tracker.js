/* gumshoe tracker: page views and custom events, sent to a gumshoe collect route.
 *
 * Served by GET /script.js with the [collect.script] settings in place of __GUMSHOE__:
 *   e: endpoint URL ("" = /pixel.gif beside this script), f: {event, path, referrer, device}
 *   (the column each field fills; "" = not sent), l: track localhost, a: track automated
 *   browsers, o: the opt-out key.
 * Page: <script>window.gumshoe=window.gumshoe||function(){(gumshoe.q=gumshoe.q||[]).push(arguments)}</script>
 *       <script async src="https://collector.example/script.js"></script>
 * Then gumshoe("signup", {plan: "pro"}) sends a custom event. No dependencies, no cookies.
 * Build: npm run build (terser, pinned in package.json) -> tracker.min.js.
 */
(function (config) {
  "use strict";
  var w = window, d = document, nav = navigator, loc = w.location;
  var fields = config.f;
  var queued = (w.gumshoe && w.gumshoe.q) || [];
  var script = d.currentScript;
  var src = script ? script.src : "";
  var endpoint = config.e || (src ? src.replace(/\/script\.js(\?.*)?$/, "/pixel.gif") : "/pixel.gif");
  var keyMatch = /[?&]key=([^&#]*)/.exec(src);
  if (keyMatch) {
    endpoint += (endpoint.indexOf("?") < 0 ? "?" : "&") + "key=" + keyMatch[1];
  }

  function optedOut() {
    try {
      if (w.localStorage && w.localStorage.getItem(config.o)) {
        return true;
      }
    } catch (err) { /* storage blocked: not an opt-out */ }
    return !!w[config.o];
  }

  function skipped() {
    if (optedOut()) {
      return true;
    }
    if (!config.l && (/^(localhost|127\.|\[::1\]$)/.test(loc.hostname) || loc.protocol === "file:")) {
      return true;
    }
    return !config.a && !!nav.webdriver;
  }

  function host(url) {
    var m = /^[a-z][a-z0-9+.-]*:\/\/([^\/?#:]*)/i.exec(url || "");
    return m ? m[1] : "";
  }

  function device() {
    var coarse = w.matchMedia && w.matchMedia("(pointer:coarse)").matches;
    var small = Math.min(w.screen.width, w.screen.height);
    return coarse ? (small >= 600 ? "tablet" : "mobile") : "desktop";
  }

  function send(event, props) {
    if (skipped()) {
      return;
    }
    var data = {}, k, parts = [];
    if (fields.event) {
      data[fields.event] = event;
    }
    if (fields.path) {
      data[fields.path] = loc.pathname;
    }
    if (fields.referrer) {
      data[fields.referrer] = host(d.referrer);
    }
    if (fields.device) {
      data[fields.device] = device();
    }
    for (k in props) {
      if (Object.prototype.hasOwnProperty.call(props, k) && props[k] != null) {
        data[k] = props[k];
      }
    }
    for (k in data) {
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(data[k]));
    }
    var body = parts.join("&");
    try {
      if (nav.sendBeacon && nav.sendBeacon(endpoint, body)) {
        return;
      }
    } catch (err) { /* fall through to fetch */ }
    var url = endpoint + (endpoint.indexOf("?") < 0 ? "?" : "&") + body;
    if (w.fetch) {
      w.fetch(url, { method: "GET", keepalive: true, mode: "no-cors", credentials: "omit" });
    } else {
      new Image().src = url;
    }
  }

  var lastPath = null;

  function pageview() {
    if (loc.pathname !== lastPath) {
      lastPath = loc.pathname;
      send("pageview", {});
    }
  }

  var push = w.history.pushState;
  w.history.pushState = function () {
    var out = push.apply(this, arguments);
    pageview();
    return out;
  };
  w.addEventListener("popstate", pageview);

  w.gumshoe = function (event, props) {
    send(event, props || {});
  };
  for (var i = 0; i < queued.length; i++) {
    w.gumshoe.apply(null, queued[i]);
  }
  pageview();
})(__GUMSHOE__);
