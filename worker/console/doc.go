// Package console is attune's web console: server-rendered pages at / of
// attune serve's listener for what ran, what failed and why, what is
// running now, and a form to run an action with the right parameters.
//
// It sits in front of the REST API (package api) on the same listener and
// uses the API's own auth: the login form takes an API token, which a
// signed, HttpOnly, SameSite=Strict cookie carries by name. Pages read
// through package jobs; everything that changes state (run, cancel, re-run,
// enable or disable a rule) is an in-process call of the API's route with
// the session's token, so it is validated, logged and answered exactly as
// over HTTP. Every POST carries a CSRF token tied to the session.
//
// Templates, styles and the small script are embedded: the console needs
// no network beyond the listener and works offline.
package console
