package python

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
)

// errStubGone is behind every failure caused by a stub process that exited
// or was killed.
var errStubGone = errors.New("the Python stub process is gone")

// stubConfig is what starting one stub process needs.
type stubConfig struct {
	python    string   // the interpreter
	env       []string // the environment, PATH and the like included
	script    string   // nereid_stub.py
	workDir   string
	shmFirst  int64 // first segment of each side
	shmGrowth int64 // later segments, at least
	timeout   time.Duration
	logger    zerolog.Logger
	// handler answers the stub's own requests (BLS, model control,
	// metrics); nil for a stub that only completes a configuration.
	handler *callHandler
}

// stub is one stub process and the parent's end of its socket. It lives
// until the process is gone; an instance replaces a dead one.
type stub struct {
	cfg   *stubConfig
	cmd   *exec.Cmd
	c     *conn
	arena *arena
	log   zerolog.Logger

	mu       sync.Mutex // guards the fields below
	nextID   int64
	waiters  map[int64]chan *inMsg              // exec, ready and ping ids → their answer
	streams  map[int64]*stream                  // decoupled requests by handle
	live     map[int64]inference.ResponseSender // requests of the running exec, not decoupled
	spans    map[int64]inference.Span           // the traces of sampled requests in flight, by handle
	calls    map[int64]context.CancelFunc
	execCtx  context.Context //nolint:containedctx // the running exec's, for the BLS calls it makes
	gone     bool
	goneErr  error
	inited   chan *inMsg
	finished chan *inMsg

	// handler answers the stub's own requests; it starts as cfg.handler
	// and is set once more when a stub parked after auto-complete becomes
	// an instance's.
	handler atomic.Pointer[callHandler]

	// delivering counts the reader's calls into a decoupled request's
	// sender, which may block while a client reads slowly: a health check
	// that goes unanswered meanwhile is not the stub's fault.
	delivering atomic.Int32

	work   sync.WaitGroup  // goroutines answering the stub (BLS calls, calls)
	active sync.WaitGroup  // Execute calls using the arena
	ctx    context.Context //nolint:containedctx // the stub's life: its BLS calls and model control end with it
	cancel context.CancelFunc
	done   chan struct{} // closed once the stub is gone and everything failed
	exited chan struct{} // closed once the process was reaped
}

// startStub starts the process. It returns once the process runs; init
// is the first frame to send.
func startStub(cfg *stubConfig) (*stub, error) {
	c, child, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer child.Close()
	cmd := exec.Command(cfg.python, "-u", "-B", cfg.script)
	cmd.Env = append(cfg.env, "NEREID_STUB_FD=3",
		fmt.Sprintf("NEREID_STUB_SHM_DEFAULT=%d", cfg.shmFirst),
		fmt.Sprintf("NEREID_STUB_SHM_GROWTH=%d", cfg.shmGrowth))
	cmd.Dir = cfg.workDir
	cmd.ExtraFiles = []*os.File{child}
	// Its own process group, so that a kill reaches whatever the model
	// started; and killed with the server if the server dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &lineLogger{log: cfg.logger, stream: "stdout"}
	errw := &lineLogger{log: cfg.logger, stream: "stderr"}
	cmd.Stdout, cmd.Stderr = out, errw
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		c.close()
		return nil, inference.Unavailable("cannot start the Python stub with '%s': %v", cfg.python, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stub{
		cfg: cfg, cmd: cmd, c: c,
		log:      cfg.logger.With().Int("stub_pid", cmd.Process.Pid).Logger(),
		waiters:  map[int64]chan *inMsg{},
		streams:  map[int64]*stream{},
		live:     map[int64]inference.ResponseSender{},
		spans:    map[int64]inference.Span{},
		calls:    map[int64]context.CancelFunc{},
		inited:   make(chan *inMsg, 1),
		finished: make(chan *inMsg, 1),
		ctx:      ctx, cancel: cancel,
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	s.arena = newArena(cfg.shmFirst, cfg.shmGrowth, s.announce, s.dropSegment)
	if cfg.handler != nil {
		s.handler.Store(cfg.handler)
	}
	go func() {
		_ = cmd.Wait()
		out.flush()
		errw.flush()
		close(s.exited)
	}()
	go s.readLoop()
	return s, nil
}

// pid is the stub's process id.
func (s *stub) pid() int { return s.cmd.Process.Pid }

func (s *stub) announce(id int, size int64, fd int) error {
	b := newFrame("seg")
	b = appendInt(b, "s", int64(id))
	b = appendInt(b, "z", size)
	return s.c.writeFrame(endFrame(b), fd)
}

func (s *stub) dropSegment(id int) error {
	b := newFrame("drop")
	b = appendInt(b, "s", int64(id))
	return s.c.writeFrame(endFrame(b), -1)
}

// send writes a frame, with the stub chunks released since the last one.
func (s *stub) send(b []byte) error {
	b = appendFrees(b, s.arena.takeFrees())
	if err := s.c.writeFrame(endFrame(b), -1); err != nil {
		return s.goneError(err)
	}
	return nil
}

// goneError is the error a call gets once the stub is gone.
func (s *stub) goneError(cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone && s.goneErr != nil {
		return s.goneErr
	}
	return inference.Errorf(inference.CodeInternal, "Stub process is not healthy: %w: %v", errStubGone, cause)
}

// register reserves an id whose answer comes on the returned channel.
func (s *stub) register() (int64, chan *inMsg, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return 0, nil, s.goneErr
	}
	s.nextID++
	ch := make(chan *inMsg, 1)
	s.waiters[s.nextID] = ch
	return s.nextID, ch, nil
}

func (s *stub) unregister(id int64) {
	s.mu.Lock()
	delete(s.waiters, id)
	s.mu.Unlock()
}

// await waits for the answer to id, the end of the stub, or ctx.
func (s *stub) await(ctx context.Context, id int64, ch chan *inMsg) (*inMsg, error) {
	select {
	case m := <-ch:
		return m, nil
	case <-s.done:
		return nil, s.goneError(nil)
	case <-ctx.Done():
		s.unregister(id)
		return nil, ctx.Err()
	}
}

// initialize sends init and waits for inited; a model that fails to
// initialize fails to load with the stub's text.
func (s *stub) initialize(ctx context.Context, mode, modelPath string, args map[string]string, config []byte, decoupled bool) (*inMsg, error) {
	b := newFrame("init")
	b = appendStr(b, "mode", mode)
	b = appendStr(b, "path", modelPath)
	b = append(b, `,"args":{`...)
	for i, k := range sortedStrings(args) {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonw.AppendString(b, k)
		b = append(b, ':')
		b = jsonw.AppendString(b, args[k])
	}
	b = append(b, '}')
	b = appendRaw(b, "config", config)
	b = appendBool(b, "decoupled", decoupled)
	if err := s.send(b); err != nil {
		return nil, err
	}
	select {
	case m := <-s.inited:
		if m.Error != nil {
			return nil, inference.Errorf(inference.CodeInvalidArg, "%s", m.Error.Msg)
		}
		return m, nil
	case <-s.done:
		return nil, s.goneError(nil)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ping checks that the stub's reader answers.
func (s *stub) ping(ctx context.Context) error {
	id, ch, err := s.register()
	if err != nil {
		return err
	}
	b := newFrame("ping")
	b = appendInt(b, "id", id)
	if err := s.send(b); err != nil {
		s.unregister(id)
		return err
	}
	_, err = s.await(ctx, id, ch)
	return err
}

// ready asks the model's is_ready.
func (s *stub) ready(ctx context.Context) (bool, error) {
	id, ch, err := s.register()
	if err != nil {
		return false, err
	}
	b := newFrame("ready")
	b = appendInt(b, "id", id)
	if err := s.send(b); err != nil {
		s.unregister(id)
		return false, err
	}
	m, err := s.await(ctx, id, ch)
	if err != nil {
		return false, err
	}
	if m.Error != nil {
		return false, m.Error.err()
	}
	return m.OK, nil
}

// finalize asks the model to finalize and waits, at most until ctx ends,
// for the answer; the process exits after it.
func (s *stub) finalize(ctx context.Context) error {
	if err := s.send(newFrame("fin")); err != nil {
		return err
	}
	select {
	case m := <-s.finished:
		if m.Error != nil {
			return fmt.Errorf("finalize: %s", m.Error.Msg)
		}
		return nil
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("finalize did not return in time")
	}
}

// kill ends the process group at once.
func (s *stub) kill() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Process.Kill()
}

// stop ends the stub: it closes the socket (the stub exits on end of
// file), kills what is left after grace, and waits until the process is
// reaped and every goroutine has returned.
func (s *stub) stop(grace time.Duration) {
	_ = s.c.uc.Close()
	select {
	case <-s.exited:
	case <-time.After(grace):
		s.kill()
		<-s.exited
	}
	<-s.done
}

// readLoop owns the socket's read side: it dispatches every frame until
// the stub is gone, then fails what waits on it.
func (s *stub) readLoop() {
	var cause error
	for {
		body, err := s.c.readFrame()
		if err != nil {
			cause = err
			break
		}
		m, err := decodeMsg(body)
		if err == nil {
			err = s.dispatch(m)
		}
		if err != nil {
			s.log.Error().Err(err).Msg("protocol error: stopping the Python stub")
			cause = err
			s.kill()
			break
		}
	}
	s.teardown(cause)
}

func (s *stub) dispatch(m *inMsg) error {
	if len(m.Fr) > 0 {
		if err := s.arena.release(m.Fr); err != nil {
			return err
		}
	}
	switch m.T {
	case "seg":
		fd, ok := s.c.takeFD()
		if !ok {
			return fmt.Errorf("seg frame for segment %d came without a file descriptor", m.S)
		}
		return s.arena.addPeer(m.S, fd, m.Z)
	case "drop":
		return s.arena.dropPeer(m.S)
	case "free":
	case "inited":
		select {
		case s.inited <- m:
		default:
			return errors.New("inited sent twice")
		}
	case "fin_done":
		select {
		case s.finished <- m:
		default:
		}
	case "done", "ready_r", "pong":
		id, ok := intID(m.ID)
		if !ok {
			return fmt.Errorf("%s frame without an integer id", m.T)
		}
		s.mu.Lock()
		ch := s.waiters[id]
		delete(s.waiters, id)
		s.mu.Unlock()
		if ch == nil {
			// Nobody waits any more (the batch was cancelled): give back
			// what the answer carried.
			s.discard(m)
			return nil
		}
		ch <- m
	case "resp":
		return s.deliver(m)
	case "log":
		s.logModel(m)
	case "infer", "call", "icancel", "mop":
		h := s.handler.Load()
		if h == nil {
			return fmt.Errorf("%s frame from a stub that may not send one", m.T)
		}
		return h.handle(s, m)
	}
	return nil
}

// discard releases the stub chunks of an answer nobody reads.
func (s *stub) discard(m *inMsg) {
	var cs []peerChunk
	for _, r := range m.Resps {
		for _, d := range r.Out {
			if d.L > 0 {
				if _, c, err := s.arena.view(d.S, d.O, d.L); err == nil {
					cs = append(cs, c)
				}
			}
		}
	}
	s.arena.releasePeer(cs)
}

func (s *stub) logModel(m *inMsg) {
	var ev *zerolog.Event
	switch m.Lvl {
	case "warn":
		ev = s.log.Warn()
	case "error":
		ev = s.log.Error()
	case "verbose":
		ev = s.log.Debug()
	default:
		ev = s.log.Info()
	}
	if m.File != "" {
		ev = ev.Str("file", filepath.Base(m.File)).Int("line", m.Line)
	}
	ev.Msg(m.Msg)
}

// teardown runs once, on the reader goroutine, when the stub is gone:
// waiting callers and live streams fail, calls are cancelled, and once no
// goroutine uses the arena any more it is closed.
func (s *stub) teardown(cause error) {
	// The socket is unusable: the process has exited, or goes now (it
	// exits by itself on end of file; a stuck one is killed).
	select {
	case <-s.exited:
	case <-time.After(2 * time.Second):
		s.kill()
		<-s.exited
	}
	reason := "the process exited"
	if st := s.cmd.ProcessState; st != nil {
		reason = st.String()
	}
	if cause != nil && !isEOF(cause) {
		reason += ": " + cause.Error()
	}
	s.mu.Lock()
	s.gone = true
	s.goneErr = inference.Errorf(inference.CodeInternal, "Stub process is not healthy (%s): %w", reason, errStubGone)
	streams := s.streams
	s.streams = map[int64]*stream{}
	clear(s.spans)
	calls := s.calls
	s.calls = map[int64]context.CancelFunc{}
	s.mu.Unlock()
	s.cancel()
	for _, cancel := range calls {
		cancel()
	}
	for _, st := range streams {
		st.fail(s.goneErr)
	}
	close(s.done)
	if h := s.handler.Load(); h != nil {
		h.metrics.forgetStub(s)
	}
	s.work.Wait()
	s.active.Wait()
	s.arena.close()
	for {
		fd, ok := s.c.takeFD()
		if !ok {
			break
		}
		_ = syscall.Close(fd)
	}
	_ = s.c.uc.Close()
}

func sortedStrings(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// lineLogger writes a stub's stdout or stderr into the log, a line at a
// time.
type lineLogger struct {
	log    zerolog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 {
		l.emit(l.buf)
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineLogger) emit(line []byte) {
	if len(bytes.TrimSpace(line)) > 0 {
		l.log.Info().Str("stream", l.stream).Msg(string(line))
	}
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.emit(l.buf)
	l.buf = nil
}
