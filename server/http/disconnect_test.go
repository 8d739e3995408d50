package httpfront

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/nereid-project/nereid/inference"
)

// patience bounds every wait of these tests; none is expected to come
// near it.
const patience = 10 * time.Second

// tcpServer serves a front end over core on loopback TCP, whose sockets
// the disconnect watch can peek at. hook receives the watch's events.
func tcpServer(t *testing.T, core Core, opts Options, hook func(watchEvent)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	opts.Logger = zerolog.Nop()
	srv := New(core, opts)
	srv.watchHook = hook
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// eventLog collects watch events for a test to wait on.
type eventLog chan watchEvent

func newEventLog() eventLog { return make(eventLog, 64) }

func (l eventLog) hook(e watchEvent) {
	select {
	case l <- e:
	default: // a test that stopped listening
	}
}

// await waits until want is logged, failing the test after patience.
func (l eventLog) await(t *testing.T, want watchEvent) {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case e := <-l:
			if e == want {
				return
			}
		case <-deadline:
			t.Fatalf("watch event %d never came", want)
		}
	}
}

func awaitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(patience):
		t.Fatalf("%s never happened", what)
	}
}

func postRequest(path, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: nereid\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// blockingInfer is an Infer that reports its arrival on entered and then
// waits for its context to end, which it reports on cancelled.
func blockingInfer(entered, cancelled chan struct{}) func(context.Context, *inference.Request) (*inference.Response, error) {
	return func(ctx context.Context, _ *inference.Request) (*inference.Response, error) {
		close(entered)
		select {
		case <-ctx.Done():
			close(cancelled)
			return nil, inference.Errorf(inference.CodeCancelled, "request cancelled")
		case <-time.After(patience):
			return nil, inference.Internal("the request was not cancelled")
		}
	}
}

func TestInferCancelledWhenClientCloses(t *testing.T) {
	core := newFakeCore()
	entered, cancelled := make(chan struct{}), make(chan struct{})
	core.inferFn = blockingInfer(entered, cancelled)
	events := newEventLog()
	addr := tcpServer(t, core, Options{ReadTimeout: patience}, events.hook)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, postRequest("/v2/models/any/infer", `{"inputs":[]}`)); err != nil {
		t.Fatal(err)
	}
	awaitClosed(t, entered, "the request reaching the core")
	conn.Close()
	awaitClosed(t, cancelled, "the cancellation of the request")
	events.await(t, watchPeerGone)
}

func TestGenerateStreamCancelledWhenClientCloses(t *testing.T) {
	core := newFakeCore()
	cancelled := make(chan struct{})
	core.streamFn = func(ctx context.Context, req *inference.Request, out inference.ResponseFunc) error {
		if err := out(textResponse(req, "first"), false); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			close(cancelled)
			return inference.Errorf(inference.CodeCancelled, "request cancelled")
		case <-time.After(patience):
			return inference.Internal("the request was not cancelled")
		}
	}
	events := newEventLog()
	addr := tcpServer(t, core, Options{}, events.hook)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, postRequest("/v2/models/gen_decoupled/generate_stream", `{"text_input":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != contentTypeSSE {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"text_output":"first"`) {
		t.Fatalf("first event %q: %v", line, err)
	}
	// The model is now waiting for its next token: only the watch can
	// tell that the client left.
	conn.Close()
	awaitClosed(t, cancelled, "the cancellation of the stream")
	events.await(t, watchPeerGone)
}

func TestGenerateCancelledWhenClientCloses(t *testing.T) {
	core := newFakeCore()
	entered, cancelled := make(chan struct{}), make(chan struct{})
	infer := blockingInfer(entered, cancelled)
	core.streamFn = func(ctx context.Context, req *inference.Request, _ inference.ResponseFunc) error {
		_, err := infer(ctx, req)
		return err
	}
	addr := tcpServer(t, core, Options{}, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, postRequest("/v2/models/gen_decoupled/generate", `{"text_input":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	awaitClosed(t, entered, "the request reaching the core")
	conn.Close()
	awaitClosed(t, cancelled, "the cancellation of the request")
}

// TestPipelinedRequestIsNotADisconnect sends the next request while the
// first one runs: the watch sees bytes, stops, and both are answered.
func TestPipelinedRequestIsNotADisconnect(t *testing.T) {
	core := newFakeCore()
	release := make(chan struct{})
	var calls atomic.Int32
	core.inferFn = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		if calls.Add(1) == 1 {
			select {
			case <-release:
			case <-time.After(patience):
			}
			if ctx.Err() != nil {
				return nil, inference.Internal("the first request was cancelled")
			}
		}
		return core.echo(req)
	}
	events := newEventLog()
	addr := tcpServer(t, core, Options{ReadTimeout: patience}, events.hook)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := postRequest("/v2/models/any/infer", `{"inputs":[]}`)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	events.await(t, watchBegan)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	events.await(t, watchPipelined)
	close(release)
	br := bufio.NewReader(conn)
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("response %d: %d %s", i, resp.StatusCode, body)
		}
	}
}

// TestWatchedRequestKeepsConnection runs a request long enough to be
// watched and then another on the same connection: the watch neither
// cancels the first nor disturbs the connection.
func TestWatchedRequestKeepsConnection(t *testing.T) {
	core := newFakeCore()
	events := newEventLog()
	began := make(chan struct{})
	var calls atomic.Int32
	core.inferFn = func(ctx context.Context, req *inference.Request) (*inference.Response, error) {
		if calls.Add(1) == 1 {
			select {
			case <-began:
			case <-time.After(patience):
			}
			if ctx.Err() != nil {
				return nil, inference.Internal("a live client's request was cancelled")
			}
		}
		return core.echo(req)
	}
	hook := func(e watchEvent) {
		if e == watchBegan && calls.Load() == 1 {
			select {
			case <-began:
			default:
				close(began)
			}
		}
		events.hook(e)
	}
	addr := tcpServer(t, core, Options{ReadTimeout: patience, IdleTimeout: patience}, hook)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i := range 2 {
		if _, err := io.WriteString(conn, postRequest("/v2/models/any/infer", `{"id":"k","inputs":[]}`)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(patience))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("request %d: %d %s", i, resp.StatusCode, body)
		}
		if i == 0 {
			events.await(t, watchInterrupted)
		}
	}
}

// TestShutdownCancelsRunningRequest checks that a request still running
// when Shutdown stops waiting is cancelled, on a connection that cannot
// be watched.
func TestShutdownCancelsRunningRequest(t *testing.T) {
	core := newFakeCore()
	entered, cancelled := make(chan struct{}), make(chan struct{})
	core.inferFn = blockingInfer(entered, cancelled)
	srv := New(core, Options{Logger: zerolog.Nop()})
	ln := fasthttputil.NewInmemoryListener()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return ln.Dial() }}
	defer tr.CloseIdleConnections()
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		resp, err := (&http.Client{Transport: tr}).Post("http://nereid/v2/models/any/infer", contentTypeJSON, strings.NewReader(`{"inputs":[]}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	awaitClosed(t, entered, "the request reaching the core")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown: %v", err)
	}
	awaitClosed(t, cancelled, "the cancellation of the request")
	awaitClosed(t, answered, "the client's answer")
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	reads []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.reads = append(c.reads, t)
	return nil
}

func (c *deadlineConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

func (c *deadlineConn) SetWriteDeadline(time.Time) error { return nil }

func TestWatchRestoresReadDeadline(t *testing.T) {
	dc := &deadlineConn{}
	lc := &lingerConn{Conn: dc}
	d1 := time.Now().Add(time.Minute)
	d2 := d1.Add(time.Minute)
	_ = lc.SetReadDeadline(d1)
	lc.beginWatch()
	_ = lc.SetReadDeadline(d2) // fasthttp's, while watched: kept for later
	lc.interruptWatch()
	lc.endWatch()
	want := []time.Time{d1, {}, aLongTimeAgo, d2}
	if len(dc.reads) != len(want) {
		t.Fatalf("read deadlines %v, want %v", dc.reads, want)
	}
	for i := range want {
		if !dc.reads[i].Equal(want[i]) {
			t.Errorf("read deadline %d: %v, want %v", i, dc.reads[i], want[i])
		}
	}
}
