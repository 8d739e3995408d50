package httpfront

import (
	"context"
	"net"
	"sync"
	"time"
)

// Client disconnects. fasthttp gives a handler no signal when its client
// goes away, and reading the connection would consume the next pipelined
// request. So a request that is still running disconnectWatchDelay after
// it reached the core has its connection watched: the timer's goroutine
// waits, in the runtime's network poller, until the socket is readable and
// peeks at it without consuming anything (MSG_PEEK). An end of stream or a
// reset means the client is gone, and the request's context is cancelled;
// bytes mean the client pipelined its next request, which fasthttp reads
// once this one is answered, and the watch ends there. Short requests, the
// common case, pay for resetting and stopping one timer that their call
// object keeps; no goroutine starts and nothing is allocated for them.
const disconnectWatchDelay = 5 * time.Millisecond

// watchEvent is a step of a connection's watch: it began, then ended one
// of three ways.
type watchEvent uint8

const (
	watchInterrupted watchEvent = iota // the request finished first
	watchPeerGone                      // end of stream or reset: cancelled
	watchPipelined                     // the client sent more: not watched
	watchBegan                         // the connection is being watched
)

type watchState uint8

const (
	watchIdle     watchState = iota
	watchArmed               // the timer is set
	watchLinked              // the timer fired; nothing to watch on this connection
	watchWatching            // the timer fired and its goroutine watches the connection
	watchStopped             // the request finished
)

// disconnectWatch cancels one request at a time when its client goes
// away. It belongs to a call object and serves its requests one after the
// other: start before handing the request to the core, stop before the
// response is written (or, for a stream, before the stream ends), from
// one goroutine at a time. Its only goroutine is the timer's, which stop
// waits for.
type disconnectWatch struct {
	timer *time.Timer    // made on the first start, reset by the next
	fired sync.WaitGroup // the timer function that may still run

	mu     sync.Mutex // guards the fields below
	state  watchState
	conn   *lingerConn     // nil: the connection cannot be watched
	base   context.Context //nolint:containedctx // the front end's, for one request at a time
	cancel context.CancelFunc
	unlink func() bool      // stops cancel from following base
	hook   func(watchEvent) // a test seam
}

// start arms the watch for a request whose context cancel ends. base is
// the front end's base context: the request's context was made without
// its cancellation (Server.requestParent), which the watch adds once the
// request has run for disconnectWatchDelay. hook, when set, learns when a
// watch of the connection begins and how it ends.
func (w *disconnectWatch) start(base context.Context, conn net.Conn, cancel context.CancelFunc, hook func(watchEvent)) {
	lc, _ := conn.(*lingerConn)
	if lc != nil && !lc.watchable() {
		lc = nil
	}
	w.mu.Lock()
	w.state, w.conn, w.base, w.cancel, w.hook = watchArmed, lc, base, cancel, hook
	w.mu.Unlock()
	w.fired.Add(1)
	if w.timer == nil {
		w.timer = time.AfterFunc(disconnectWatchDelay, w.fire)
	} else {
		w.timer.Reset(disconnectWatchDelay)
	}
}

// fire runs on the timer's goroutine: it ties the request to the base
// context and, when it can, watches the connection until the client goes
// away, sends more, or stop interrupts it.
func (w *disconnectWatch) fire() {
	defer w.fired.Done()
	w.mu.Lock()
	if w.state != watchArmed {
		w.mu.Unlock()
		return
	}
	w.unlink = context.AfterFunc(w.base, w.cancel)
	lc, cancel, hook := w.conn, w.cancel, w.hook
	if lc == nil {
		w.state = watchLinked
		w.mu.Unlock()
		return
	}
	w.state = watchWatching
	// Under the lock, so that stop's interruption comes after it.
	lc.beginWatch()
	w.mu.Unlock()
	if hook != nil {
		hook(watchBegan)
	}

	out := lc.awaitInput()
	if out == watchPeerGone {
		cancel()
	}
	if hook != nil {
		hook(out)
	}
}

// stop ends the watch of the current request and returns once the timer's
// goroutine, if it started, has returned and the connection's read
// deadline is back as fasthttp set it.
func (w *disconnectWatch) stop() {
	if w.timer == nil {
		return
	}
	if w.timer.Stop() {
		w.fired.Done() // fire will not run
		return
	}
	w.mu.Lock()
	watching := w.state == watchWatching
	w.state = watchStopped
	if watching {
		w.conn.interruptWatch()
	}
	unlink := w.unlink
	w.unlink = nil
	w.mu.Unlock()
	w.fired.Wait()
	if watching {
		w.conn.endWatch()
	}
	if unlink != nil {
		unlink()
	}
}
