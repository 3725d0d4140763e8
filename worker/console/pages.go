package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/attune-system/attune/jobs"
)

// statuses in the order the console lists them.
var statuses = jobs.Statuses

// ranges are the executions page's time ranges.
var ranges = []struct{ Value, Label string }{
	{"", "any time"}, {"15m", "last 15 minutes"}, {"1h", "last hour"}, {"6h", "last 6 hours"},
	{"24h", "last 24 hours"}, {"168h", "last 7 days"},
}

// localTime is the format of datetime-local inputs, read as UTC.
const localTime = "2006-01-02T15:04"

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	hour, err := lastHour(ctx, c.pool)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	queues, err := jobs.QueueDepths(ctx, c.pool)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	running, _, err := jobs.ListPage(ctx, c.pool, jobs.PageFilter{Status: jobs.StatusRunning, Limit: 20})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	counts, err := jobs.CountByStatus(ctx, c.pool, jobs.PageFilter{Since: time.Now().Add(-time.Hour)})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	workers, err := jobs.ListWorkers(ctx, c.pool, false) // active, or inactive for under a day
	if err != nil {
		c.fail(w, r, err)
		return
	}
	active := 0
	for _, wk := range workers {
		if wk.Status == "active" {
			active++
		}
	}
	created, failures := 0, 0
	for _, m := range hour {
		created += m.Created
		failures += m.Failures
	}
	c.renderLive(w, r, http.StatusOK, "overview", "Overview", true, map[string]any{
		"Chart": chart(hour), "Created": created, "Failures": failures, "Queues": queues, "Running": running,
		"Counts": countList(counts), "Workers": len(workers), "ActiveWorkers": active,
	})
}

type statusCount struct {
	Status string
	N      int
}

func countList(m map[string]int) []statusCount {
	var out []statusCount
	for _, s := range statuses {
		if m[s] > 0 {
			out = append(out, statusCount{s, m[s]})
		}
	}
	return out
}

// executionFilters is the executions page's form.
type executionFilters struct {
	Status, Action, Rule, Range, Since, Until string
}

func (f executionFilters) query(extra ...string) string {
	v := url.Values{}
	for k, s := range map[string]string{"status": f.Status, "action": f.Action, "rule": f.Rule, "range": f.Range, "since": f.Since, "until": f.Until} {
		if s != "" {
			v.Set(k, s)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			v.Del(extra[i])
		} else {
			v.Set(extra[i], extra[i+1])
		}
	}
	if len(v) == 0 {
		return "/executions"
	}
	return "/executions?" + v.Encode()
}

func (c *Console) executions(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	ff := executionFilters{Status: q.Get("status"), Action: q.Get("action"), Rule: q.Get("rule"),
		Range: q.Get("range"), Since: q.Get("since"), Until: q.Get("until")}
	f := jobs.PageFilter{ActionRef: ff.Action, RuleRef: ff.Rule, Status: ff.Status, Limit: 50}
	var problems []string
	if f.Status != "" && !jobs.ValidStatus(f.Status) {
		problems = append(problems, fmt.Sprintf("%q is not a status; showing every status", f.Status))
		f.Status, ff.Status = "", ""
	}
	if ff.Range != "" {
		if d, err := time.ParseDuration(ff.Range); err == nil && d > 0 {
			f.Since = time.Now().Add(-d)
		} else {
			problems = append(problems, fmt.Sprintf("%q is not a time range", ff.Range))
			ff.Range = ""
		}
	}
	for _, b := range []struct {
		text *string
		t    *time.Time
		name string
	}{{&ff.Since, &f.Since, "From"}, {&ff.Until, &f.Until, "To"}} {
		if *b.text == "" {
			continue
		}
		t, err := time.Parse(localTime, *b.text)
		if err != nil {
			if t, err = time.Parse(time.RFC3339, *b.text); err != nil {
				problems = append(problems, fmt.Sprintf("%s %q is not a time like 2026-01-02T15:04", b.name, *b.text))
				*b.text = ""
				continue
			}
		}
		if b.t.IsZero() || t.After(*b.t) {
			*b.t = t
		}
	}
	if v := q.Get("cursor"); v != "" {
		f.Before, _ = strconv.ParseInt(v, 10, 64)
	}
	list, next, err := jobs.ListPage(ctx, c.pool, f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	counts, err := jobs.CountByStatus(ctx, c.pool, f)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	actions, err := jobs.ListActions(ctx, c.pool, "")
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rules, err := jobs.ListRules(ctx, c.pool)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	live := false
	for _, s := range []string{jobs.StatusRequested, jobs.StatusScheduled, jobs.StatusRunning, jobs.StatusCanceling} {
		live = live || counts[s] > 0
	}
	total := 0
	var tabs []map[string]any
	for _, s := range statuses {
		total += counts[s]
	}
	tabs = append(tabs, map[string]any{"Status": "", "Label": "all", "N": total, "URL": ff.query("status", ""), "Current": ff.Status == ""})
	for _, s := range statuses {
		if counts[s] > 0 || ff.Status == s {
			tabs = append(tabs, map[string]any{"Status": s, "Label": s, "N": counts[s], "URL": ff.query("status", s), "Current": ff.Status == s})
		}
	}
	data := map[string]any{"List": list, "Filters": ff, "Tabs": tabs, "Statuses": statuses, "Ranges": ranges,
		"Actions": actions, "Rules": rules, "Problems": problems, "Filtered": ff != executionFilters{}}
	if next != 0 {
		data["Older"] = ff.query("cursor", strconv.FormatInt(next, 10))
	}
	if f.Before != 0 {
		data["Newest"] = ff.query()
	}
	c.renderLive(w, r, http.StatusOK, "executions", "Executions", live, data)
}

// idParam reads {id}, answering 404 for anything but a positive number.
func (c *Console) idParam(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		c.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("%q is not an execution id", r.PathValue("id")), "The executions page lists them.")
		return 0, false
	}
	return id, true
}

func (c *Console) execution(w http.ResponseWriter, r *http.Request) {
	id, ok := c.idParam(w, r)
	if !ok {
		return
	}
	// The page's own refresh (console.js) swaps only the facts: it need not
	// carry the output, which may be 20 MiB, every 2 s.
	get := jobs.Get
	if r.Header.Get(liveHeader) == "facts" {
		get = jobs.GetFacts
	}
	e, err := get(r.Context(), c.pool, id)
	if errors.Is(err, jobs.ErrNotFound) {
		c.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Execution %d does not exist", id), "The executions page lists the recent ones.")
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	a, err := jobs.GetAction(r.Context(), c.pool, e.ActionRef)
	if err != nil && !errors.Is(err, jobs.ErrUnknownRef) {
		c.fail(w, r, err)
		return
	}
	var fields []field
	if a != nil {
		fields = formFields(a, nil)
	}
	// An unfinished execution's page follows the log stream and refreshes
	// only its facts (the parts marked data-live), not the output.
	c.renderLive(w, r, http.StatusOK, "execution", fmt.Sprintf("Execution %d", e.ID), !jobs.Finished(e.Status), map[string]any{
		"E": e, "Action": a, "Parameters": maskedParameters(e.Parameters, fields),
		"Cancellable": !jobs.Finished(e.Status) && e.Status != jobs.StatusCanceling,
		"Problem":     problems[r.URL.Query().Get("problem")],
	})
}

// maskedParameters pretty-prints parameters with every parameter the action
// declares secret masked. attune stores them masked already; this keeps a
// value out of the page even if a row were written some other way.
func maskedParameters(raw json.RawMessage, fields []field) string {
	var p map[string]any
	if json.Unmarshal(raw, &p) != nil {
		return prettyJSON(raw)
	}
	for _, f := range fields {
		if _, ok := p[f.Name]; ok && f.Secret {
			p[f.Name] = secretMask
		}
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	return string(b)
}

const secretMask = "********"

// liveHeader is the header console.js's refresh sends, "facts", when the
// page swaps only its parts marked data-live.
const liveHeader = "X-Attune-Refresh"

// problems are the notices an execution page shows after a redirect, by
// code, so a link cannot put words of its own on the page.
var problems = map[string]string{
	"secret": "This execution had secret parameters, whose values attune does not keep, so it cannot be re-run as is",
}

// stream is the API's live log stream for the browser: EventSource cannot
// send a bearer token, so the session's goes with an in-process request.
func (c *Console) stream(w http.ResponseWriter, r *http.Request) {
	id, ok := c.idParam(w, r)
	if !ok {
		return
	}
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: fmt.Sprintf("/api/v1/executions/%d/logs", id)}
	req.RequestURI = req.URL.Path
	req.Header = http.Header{"Accept": {"text/event-stream"}}
	if s := sessionOf(r.Context()); s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	c.api.ServeHTTP(w, req)
}

func (c *Console) cancel(w http.ResponseWriter, r *http.Request) {
	id, ok := c.idParam(w, r)
	if !ok {
		return
	}
	status, body := c.callAPI(r, sessionOf(r.Context()), "POST", fmt.Sprintf("/api/v1/executions/%d/cancel", id), nil)
	if status != http.StatusOK {
		msg, hint := apiError(body)
		c.errorPage(w, r, status, msg, hint)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/executions/%d", id), http.StatusSeeOther)
}

func (c *Console) rerun(w http.ResponseWriter, r *http.Request) {
	id, ok := c.idParam(w, r)
	if !ok {
		return
	}
	status, body := c.callAPI(r, sessionOf(r.Context()), "POST", fmt.Sprintf("/api/v1/executions/%d/re-run", id), nil)
	if status != http.StatusCreated {
		msg, hint := apiError(body)
		if status == http.StatusConflict {
			// Secret parameters are not kept: the run form asks for them.
			c.log.Info("console re-run refused", "id", id, "err", msg)
			http.Redirect(w, r, fmt.Sprintf("/executions/%d?problem=secret", id), http.StatusSeeOther)
			return
		}
		c.errorPage(w, r, status, msg, hint)
		return
	}
	c.toExecution(w, r, body)
}

// toExecution sends the browser to the execution the API just created.
func (c *Console) toExecution(w http.ResponseWriter, r *http.Request, body []byte) {
	var e jobs.Execution
	if err := json.Unmarshal(body, &e); err != nil || e.ID == 0 {
		c.fail(w, r, fmt.Errorf("error reading the API's new execution: %w", err))
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/executions/%d", e.ID), http.StatusSeeOther)
}

// pack is one pack's actions.
type pack struct {
	Ref     string
	Actions []jobs.Action
}

func (c *Console) actions(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListActions(r.Context(), c.pool, "")
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var packs []pack
	for _, a := range list {
		if len(packs) == 0 || packs[len(packs)-1].Ref != a.PackRef {
			packs = append(packs, pack{Ref: a.PackRef})
		}
		packs[len(packs)-1].Actions = append(packs[len(packs)-1].Actions, a)
	}
	c.render(w, r, http.StatusOK, "actions", "Actions", map[string]any{"Packs": packs})
}

// lookupAction reads the action the path names, answering the request
// itself (404 page, or the error) when it cannot.
func (c *Console) lookupAction(w http.ResponseWriter, r *http.Request) (*jobs.Action, bool) {
	a, err := jobs.GetAction(r.Context(), c.pool, r.PathValue("ref"))
	if errors.Is(err, jobs.ErrUnknownRef) {
		c.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("Action %q is not registered", r.PathValue("ref")), "The actions page lists the registered ones.")
		return nil, false
	}
	if err != nil {
		c.fail(w, r, err)
		return nil, false
	}
	return a, true
}

func (c *Console) action(w http.ResponseWriter, r *http.Request) {
	a, ok := c.lookupAction(w, r)
	if !ok {
		return
	}
	c.showAction(w, r, http.StatusOK, a, formFields(a, nil), "", "")
}

func (c *Console) showAction(w http.ResponseWriter, r *http.Request, status int, a *jobs.Action, fields []field, problem, hint string) {
	for i := range fields {
		if fields[i].Secret {
			fields[i].Value = "" // a secret never comes back in a page
		}
	}
	c.render(w, r, status, "action", a.Ref, map[string]any{"A": a, "Fields": fields, "Problem": problem, "Hint": hint,
		"Definition": prettyJSON(a.Parameters), "ResultSchema": prettyJSON(a.ResultSchema)})
}

func (c *Console) run(w http.ResponseWriter, r *http.Request) {
	a, ok := c.lookupAction(w, r)
	if !ok {
		return
	}
	_ = r.ParseForm()
	fields := formFields(a, r.PostForm)
	params, bad := formParameters(fields)
	if bad != "" {
		c.showAction(w, r, http.StatusUnprocessableEntity, a, fields, bad, "")
		return
	}
	status, body := c.callAPI(r, sessionOf(r.Context()), "POST", "/api/v1/executions", map[string]any{"action": a.Ref, "parameters": params})
	if status != http.StatusCreated {
		msg, hint := apiError(body)
		c.showAction(w, r, status, a, fields, msg, hint)
		return
	}
	c.toExecution(w, r, body)
}

func (c *Console) rules(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListRules(r.Context(), c.pool)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "rules", "Rules", map[string]any{"Rules": list})
}

func (c *Console) setRule(w http.ResponseWriter, r *http.Request) {
	change := r.PathValue("change")
	if change != "enable" && change != "disable" {
		c.errorPage(w, r, http.StatusNotFound, "No such change: "+change, "A rule can be enabled or disabled.")
		return
	}
	ref := r.PathValue("ref")
	status, body := c.callAPI(r, sessionOf(r.Context()), "POST", "/api/v1/rules/"+url.PathEscape(ref)+"/"+change, nil)
	if status != http.StatusOK {
		msg, hint := apiError(body)
		c.errorPage(w, r, status, msg, hint)
		return
	}
	http.Redirect(w, r, "/rules#rule-"+ref, http.StatusSeeOther)
}

func (c *Console) sensors(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListSensors(r.Context(), c.pool)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "sensors", "Sensors", map[string]any{"Sensors": list})
}

// workerRow is a worker with its capabilities read.
type workerRow struct {
	jobs.Worker
	Runtimes []string
	Max      int
}

func (c *Console) workers(w http.ResponseWriter, r *http.Request) {
	list, err := jobs.ListWorkers(r.Context(), c.pool, true)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rows := make([]workerRow, 0, len(list))
	for _, wk := range list {
		var caps struct {
			Runtimes []string `json:"runtimes"`
			Max      int      `json:"max_concurrent_executions"`
		}
		_ = json.Unmarshal(wk.Capabilities, &caps)
		slices.Sort(caps.Runtimes)
		rows = append(rows, workerRow{Worker: wk, Runtimes: caps.Runtimes, Max: caps.Max})
	}
	c.render(w, r, http.StatusOK, "workers", "Workers", map[string]any{"Workers": rows})
}

// eventRow is an event with the executions it fired.
type eventRow struct {
	jobs.Event
	Payload string
	Fired   []fired
}

func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	trigger := q.Get("trigger")
	var before int64
	if v := q.Get("cursor"); v != "" {
		before, _ = strconv.ParseInt(v, 10, 64)
	}
	const limit = 25
	list, err := jobs.ListEvents(r.Context(), c.pool, trigger, before, limit+1)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := map[string]any{"Trigger": trigger}
	if len(list) > limit {
		list = list[:limit]
		v := url.Values{"cursor": {strconv.FormatInt(list[len(list)-1].ID, 10)}}
		if trigger != "" {
			v.Set("trigger", trigger)
		}
		data["Older"] = "/events?" + v.Encode()
	}
	if before != 0 {
		data["Newest"] = "/events"
		if trigger != "" {
			data["Newest"] = "/events?trigger=" + url.QueryEscape(trigger)
		}
	}
	ids := make([]int64, len(list))
	for i, e := range list {
		ids[i] = e.ID
	}
	byEvent, err := firedBy(r.Context(), c.pool, ids)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rows := make([]eventRow, len(list))
	for i, e := range list {
		rows[i] = eventRow{Event: e, Payload: strings.TrimSpace(prettyJSON(e.Payload)), Fired: byEvent[e.ID]}
	}
	data["Events"] = rows
	c.render(w, r, http.StatusOK, "events", "Events", data)
}
