/* paysched dashboard: to the sign-in page when the session is over.
 *
 * A file of its own because the Content-Security-Policy allows no inline script. htmx already
 * follows the HX-Redirect of a refused htmx request (a 401 names /dashboard/login); this covers
 * the live streams (web/live.py):
 * - a stream says `signed-out` (signed out elsewhere, expired, its key revoked): load the page
 *   again at once, and the server sends it to sign-in saying why (the stream's check leaves
 *   the ended session for that request to find);
 * - a stream fails: an EventSource never shows why, so ask /dashboard/session, and go if it
 *   answers 401. Anything else (the server restarting, say) is left to the sse extension's
 *   own reconnects.
 */
(function () {
  "use strict";
  var LOGIN = "/dashboard/login";
  var leaving = false;

  function toLogin() {
    if (!leaving) {
      leaving = true;
      window.location.assign(LOGIN);
    }
  }

  function signedOut() {
    if (!leaving) {
      leaving = true;
      window.location.reload();
    }
  }

  // htmx's events bubble to the document; this script runs before <body> exists.
  document.addEventListener("htmx:sseOpen", function (event) {
    // The same function each time: a source that reconnects does not get it twice.
    event.detail.source.addEventListener("signed-out", signedOut);
  });

  document.addEventListener("htmx:sseError", function () {
    if (leaving) {
      return;
    }
    fetch("/dashboard/session", { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) {
        if (response.status === 401) {
          toLogin();
        }
      })
      .catch(function () {}); // the server is away: the extension keeps trying
  });
})();
