/* Phone lookup service: the contact source of a RingCentral Embeddable widget on this page.
 *
 *   <script src="https://lookup.example/embeddable/adapter.js"
 *           data-token="..." data-service-name="PhoneLookup"></script>
 *
 * Optional: data-base-url (the service's root; default: where this script came from) and
 * data-frame-id (the widget's iframe; default "rc-widget-adapter-frame", Embeddable's own).
 * Registers the service with the widget when the widget announces itself (again after the widget
 * reloads), answers its rc-post-message-request messages from the service's /contacts endpoints
 * and posts rc-post-message-response with the same id. The token travels only in the request
 * header. window.PhoneLookupAdapter.sync() asks the widget to sync its contacts again.
 */
(function () {
  "use strict";
  var TOKEN_HEADER = {{ token_header|tojson }};
  var script = document.currentScript;
  if (!script) { return; }
  var token = script.getAttribute("data-token") || "";
  var serviceName = script.getAttribute("data-service-name") || "PhoneLookup";
  var frameId = script.getAttribute("data-frame-id") || "rc-widget-adapter-frame";
  var base = (script.getAttribute("data-base-url") || new URL("..", script.src).href).replace(/\/+$/, "");
  var PATHS = {
    contactsPath: "/contacts",
    contactSearchPath: "/contacts/search",
    contactMatchPath: "/contacts/match",
    viewMatchedContactPath: "/contacts/view"
  };
  // Messages by which the widget says it runs (its state, login, dialer or phone status).
  var READY = ["rc-adapter-pushAdapterState", "rc-login-status-notify", "rc-dialer-status-notify",
               "rc-webphone-connection-status-notify", "rc-adapter-ready"];
  var registeredFrame = null; // the iframe element registered with, until it reloads
  var watched = null;
  var icon = null;

  function frame() {
    var element = document.getElementById(frameId);
    if (element && element !== watched) {
      watched = element;
      // a reload of the widget forgets the registration: register again at its next announcement
      element.addEventListener("load", function () { registeredFrame = null; });
    }
    return element;
  }

  function call(method, path, body) {
    var headers = {"Accept": "application/json"};
    headers[TOKEN_HEADER] = token;
    var options = {method: method, headers: headers, credentials: "omit", cache: "no-store"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(base + path, options).then(function (response) {
      return response.json().then(function (payload) {
        if (!response.ok) {
          throw new Error(path + ": " + response.status + " " + (payload && payload.message));
        }
        return payload;
      });
    });
  }

  function query(params) {
    var parts = [];
    Object.keys(params).forEach(function (key) {
      var value = params[key];
      if (value !== undefined && value !== null && value !== "") {
        parts.push(encodeURIComponent(key) + "=" + encodeURIComponent(value));
      }
    });
    return parts.length ? "?" + parts.join("&") : "";
  }

  function tenantIcon() {
    if (icon) { return Promise.resolve(icon); }
    return call("GET", "/status").then(function (status) {
      icon = status.contactIcon;
      return icon;
    }, function (error) {
      console.warn("phone lookup adapter:", error.message);
      return base + "/static/contact-icon.svg";
    });
  }

  function register(element) {
    registeredFrame = element;
    tenantIcon().then(function (contactIcon) {
      var service = {name: serviceName, contactIcon: contactIcon};
      Object.keys(PATHS).forEach(function (key) { service[key] = PATHS[key]; });
      element.contentWindow.postMessage({type: "rc-adapter-register-third-party-service", service: service}, "*");
    });
  }

  // The widget shows a contact only if its type is the registered name, whatever the service calls itself.
  function typed(contacts) {
    (contacts || []).forEach(function (contact) { if (!contact.deleted) { contact.type = serviceName; } });
    return contacts;
  }

  // What each registered path asks of the service, and the answer when the service cannot give one.
  var HANDLERS = {};
  HANDLERS[PATHS.contactsPath] = function (body) {
    return call("GET", "/contacts" + query({page: body.page, syncTimestamp: body.syncTimestamp}))
      .then(function (answer) { typed(answer.data); return answer; });
  };
  HANDLERS[PATHS.contactSearchPath] = function (body) {
    return call("GET", "/contacts/search" + query({searchString: body.searchString}))
      .then(function (answer) { typed(answer.data); return answer; });
  };
  HANDLERS[PATHS.contactMatchPath] = function (body) {
    return call("POST", "/contacts/match", {phoneNumbers: body.phoneNumbers || []}).then(function (answer) {
      Object.keys(answer.data || {}).forEach(function (number) { typed(answer.data[number]); });
      return answer;
    });
  };
  HANDLERS[PATHS.viewMatchedContactPath] = function (body) {
    return call("POST", "/contacts/view", body).then(function (answer) {
      if (answer && /^https?:\/\//i.test(answer.url || "")) {
        window.open(answer.url, "_blank", "noopener");
      }
      return "ok";
    });
  };
  var FALLBACK = {};
  FALLBACK[PATHS.contactsPath] = {data: [], nextPage: null};
  FALLBACK[PATHS.contactSearchPath] = {data: []};
  FALLBACK[PATHS.contactMatchPath] = {data: {}};
  FALLBACK[PATHS.viewMatchedContactPath] = "failed";

  window.addEventListener("message", function (event) {
    var data = event.data;
    var element = frame();
    // only the widget's frame is answered: another frame must not read contacts with this token
    if (!element || event.source !== element.contentWindow || !data || typeof data.type !== "string") { return; }
    if (READY.indexOf(data.type) >= 0 && registeredFrame !== element) {
      register(element);
      return;
    }
    if (data.type !== "rc-post-message-request" || !HANDLERS.hasOwnProperty(data.path)) { return; }
    var reply = function (response) {
      element.contentWindow.postMessage({type: "rc-post-message-response", responseId: data.requestId,
                                         response: response}, "*");
    };
    HANDLERS[data.path](data.body || {}).then(reply, function (error) {
      console.warn("phone lookup adapter:", error.message);
      reply(FALLBACK[data.path]);
    });
  });

  window.PhoneLookupAdapter = {
    sync: function () {
      var element = frame();
      if (element) { element.contentWindow.postMessage({type: "rc-adapter-sync-third-party-contacts"}, "*"); }
    },
    paths: PATHS
  };
})();
