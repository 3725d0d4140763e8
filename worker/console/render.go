package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/attune-system/attune/jobs"
)

var funcs = template.FuncMap{
	"finished": jobs.Finished,
	"pretty":   prettyJSON,
	"ago":      ago,
	"clock":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"duration": duration,
	"deref": func(p any) any {
		switch v := p.(type) {
		case *string:
			if v != nil {
				return *v
			}
		case *int:
			if v != nil {
				return *v
			}
		case *int64:
			if v != nil {
				return *v
			}
		case *time.Time:
			if v != nil {
				return *v
			}
		}
		return nil
	},
	"statusIcon": statusIcon,
	"inc":        func(p *int64) int64 { return *p + 1 },
}

// parsePages parses each page template with the layout.
func parsePages() map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	pages := map[string]*template.Template{}
	names, _ := fs.Glob(templateFS, "templates/*.html")
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		pages[base] = template.Must(template.Must(layout.Clone()).ParseFS(templateFS, n))
	}
	return pages
}

// pageData is what every page's template gets.
type pageData struct {
	Title   string
	Nav     string // the menu entry to mark current
	Session *session
	CSRF    string
	Refresh bool // the page reloads its live part while something runs
	RiverUI bool // River UI is mounted at /riverui
	Data    any
}

var navOf = map[string]string{"overview": "overview", "executions": "executions", "execution": "executions",
	"actions": "actions", "action": "actions", "rules": "rules", "sensors": "sensors", "workers": "workers", "events": "events"}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page, title string, data any) {
	c.renderLive(w, r, status, page, title, false, data)
}

func (c *Console) renderLive(w http.ResponseWriter, r *http.Request, status int, page, title string, refresh bool, data any) {
	t := c.pages[page]
	pd := pageData{Title: title, Nav: navOf[page], Session: sessionOf(r.Context()), Refresh: refresh, Data: data, RiverUI: c.riverui != nil}
	if pd.Session != nil {
		pd.CSRF = pd.Session.csrf
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", pd); err != nil {
		c.log.Error("console template failed", "page", page, "err", err)
		http.Error(w, "internal error: the server log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, status int, msg, hint string) {
	c.render(w, r, status, "error", http.StatusText(status), map[string]any{"Status": status, "Message": msg, "Hint": hint})
}

// fail shows an unexpected error; its detail goes to the log.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	c.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	c.errorPage(w, r, http.StatusInternalServerError, "Something went wrong reading the database", "The server log has the details; reload to try again.")
}

func prettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + roundDuration(-d)
	case d < time.Second:
		return "just now"
	}
	return roundDuration(d) + " ago"
}

func roundDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// duration is how long an execution ran, or has run so far.
func duration(e *jobs.Execution) string {
	if e.StartedAt == nil {
		return ""
	}
	end := time.Now()
	if e.FinishedAt != nil {
		end = *e.FinishedAt
	}
	d := end.Sub(*e.StartedAt)
	if d < time.Minute {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return roundDuration(d)
}

// statusIcon is a glyph beside the status text, so status never rests on
// colour alone.
func statusIcon(status string) string {
	switch status {
	case jobs.StatusCompleted:
		return "✓"
	case jobs.StatusFailed, jobs.StatusTimeout, jobs.StatusAbandoned:
		return "✗"
	case jobs.StatusRunning, jobs.StatusCanceling:
		return "▶"
	case jobs.StatusCancelled:
		return "■"
	}
	return "…"
}
