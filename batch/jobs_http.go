package batch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/server/frontend"
	"github.com/nereid-project/nereid/server/restricted"
)

// JobsPath is the prefix of the job API's paths (asyncinfer/openapi.yaml):
//
//	POST   /v2/batch/jobs              submit a job
//	GET    /v2/batch/jobs              list the jobs
//	GET    /v2/batch/jobs/{id}         a job's status
//	DELETE /v2/batch/jobs/{id}         cancel a job, or forget a finished one
//	POST   /v2/batch/jobs/{id}/resume  run a cancelled or failed job again
const JobsPath = "/v2/batch/jobs"

// ServeHTTP serves the job API. Errors are {"error": "..."} with the
// status Triton's HTTP front end gives their class, and 409 for a
// request that clashes with a job's state.
func (m *Jobs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, action, ok := parseJobsPath(r.URL.Path)
	if !ok {
		writeJobsError(w, http.StatusNotFound, "unknown batch jobs endpoint: "+r.Method+" "+r.URL.Path)
		return
	}
	var allow []string
	switch {
	case id == "":
		allow = []string{http.MethodGet, http.MethodPost}
	case action == "":
		allow = []string{http.MethodGet, http.MethodDelete}
	default:
		allow = []string{http.MethodPost}
	}
	if !slices.Contains(allow, r.Method) {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJobsError(w, http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	if !m.allowed(w, r) {
		return
	}
	switch {
	case id == "" && r.Method == http.MethodGet:
		writeJobsJSON(w, http.StatusOK, struct {
			Jobs []JobStatus `json:"jobs"`
		}{m.List()})
	case id == "":
		m.serveSubmit(w, r)
	case action == "resume":
		st, err := m.Resume(id)
		m.reply(w, http.StatusOK, st, err)
	case r.Method == http.MethodGet:
		st, err := m.Status(id)
		m.reply(w, http.StatusOK, st, err)
	default:
		st, forgotten, err := m.Cancel(r.Context(), id)
		if err == nil && forgotten {
			writeJobsJSON(w, http.StatusOK, struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			}{id, "deleted"})
			return
		}
		m.reply(w, http.StatusOK, st, err)
	}
}

// parseJobsPath splits /v2/batch/jobs[/{id}[/resume]].
func parseJobsPath(path string) (id, action string, ok bool) {
	rest, found := strings.CutPrefix(path, JobsPath)
	if !found {
		return "", "", false
	}
	if rest == "" {
		return "", "", true
	}
	segs := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	if !strings.HasPrefix(rest, "/") || segs[0] == "" || len(segs) > 2 || len(segs) == 2 && segs[1] != "resume" {
		return "", "", false
	}
	if len(segs) == 2 {
		action = segs[1]
	}
	return segs[0], action, true
}

func (m *Jobs) serveSubmit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJobRequest))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeJobsError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the job request is over %d bytes", maxJobRequest))
		return
	}
	if err != nil {
		writeJobsError(w, http.StatusBadRequest, "reading the job request: "+err.Error())
		return
	}
	var req JobRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJobsError(w, http.StatusBadRequest, "the job request is not valid: "+err.Error())
		return
	}
	if dec.More() {
		writeJobsError(w, http.StatusBadRequest, "the job request is not valid: more than one JSON object")
		return
	}
	st, err := m.Submit(r.Context(), req)
	if err == nil {
		w.Header().Set("Location", JobsPath+"/"+st.ID)
	}
	m.reply(w, http.StatusCreated, st, err)
}

// allowed checks the restricted inference category, answering 403 when
// the request lacks the header it needs.
func (m *Jobs) allowed(w http.ResponseWriter, r *http.Request) bool {
	if err := m.opts.Restricted.CheckRequest(restricted.Inference, r); err != nil {
		writeJobsError(w, jobsHTTPStatus(err), err.Error())
		return false
	}
	return true
}

func (m *Jobs) reply(w http.ResponseWriter, status int, st JobStatus, err error) {
	if err != nil {
		writeJobsError(w, jobsHTTPStatus(err), err.Error())
		return
	}
	writeJobsJSON(w, status, st)
}

// jobsHTTPStatus maps an error to its HTTP status: the one place the job
// API does so.
func jobsHTTPStatus(err error) int {
	var c *errConflict
	if errors.As(err, &c) {
		return http.StatusConflict
	}
	return frontend.HTTPStatus(err)
}

func writeJobsError(w http.ResponseWriter, status int, msg string) {
	writeJobsJSON(w, status, struct {
		Error string `json:"error"`
	}{inference.Truncate(msg, inference.MaxMessageBytes)})
}

func writeJobsJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
