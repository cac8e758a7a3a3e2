package server

import (
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
)

// CallbackPath is where providers send the user's browser back (the OAuth2 redirect URI's path).
const CallbackPath = "/oauth2/callback"

// Callback is the HTTP handler of the OAuth2 redirect. It completes the authorization and then
// sends the browser to the return URL given at the start (with connection_id, or error and
// reason, added to its query), or shows a short page. What it shows never includes the code,
// the state or a token.
func Callback(a *app.App, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// The URL carries a one-time code and state: keep them out of caches and out of the
		// Referer of whatever the page links to.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		q := r.URL.Query()
		res, err := a.CompleteAuthorization(r.Context(), q.Get("state"), q.Get("code"), q.Get("error"))
		if err != nil {
			var de *apierr.Error
			reason, msg, status := "INTERNAL", "the connection could not be completed", http.StatusInternalServerError
			switch {
			case errors.As(err, &de) && de.Reason != "INTERNAL":
				reason, msg, status = de.Reason, de.Message, httpStatus(de)
			default:
				logger.ErrorContext(r.Context(), "oauth2 callback failed", "error", err.Error())
			}
			if res.ReturnURL != "" {
				redirect(w, r, res.ReturnURL, url.Values{"error": {"connection_failed"}, "reason": {reason}})
				return
			}
			page(w, status, "Connection failed", msg)
			return
		}
		if res.ReturnURL != "" {
			redirect(w, r, res.ReturnURL, url.Values{"connection_id": {res.ConnectionID}})
			return
		}
		page(w, http.StatusOK, "Connected", "The connection is ready. You can close this window.")
	})
}

func httpStatus(e *apierr.Error) int {
	switch e.Reason {
	case apierr.ReasonInvalidArgument:
		return http.StatusBadRequest
	case apierr.ReasonUnavailable:
		return http.StatusBadGateway
	case apierr.ReasonNotFound:
		return http.StatusNotFound
	case apierr.ReasonTenantSuspended, apierr.ReasonPermissionDenied:
		return http.StatusForbidden
	}
	return http.StatusConflict
}

// redirect sends the browser to base (an allow-listed return URL) with extra query values.
func redirect(w http.ResponseWriter, r *http.Request, base string, extra url.Values) {
	u, err := url.Parse(base)
	if err != nil {
		page(w, http.StatusOK, "Done", "You can close this window.")
		return
	}
	q := u.Query()
	for k, vs := range extra {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func page(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><title>%s</title><h1>%s</h1><p>%s</p>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(msg))
}
