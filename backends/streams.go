package backends

import "sync"

// Streams owns the goroutines on which a decoupled instance answers its
// requests after Execute has returned: Go starts one unless the instance
// is closing, Done is closed when it starts to close, and Close waits for
// every one of them. A stream that sees Done ends its request (a Fail, or
// the final flag) and returns. The zero value is ready to use.
type Streams struct {
	once sync.Once
	done chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex // guards closed, and wg.Add against Close's wg.Wait
	closed bool
}

func (s *Streams) init() { s.once.Do(func() { s.done = make(chan struct{}) }) }

// Go runs f on a goroutine of its own; it reports false, and runs nothing,
// once Close has been called.
func (s *Streams) Go(f func()) bool {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(f)
	return true
}

// Done is closed once Close has been called.
func (s *Streams) Done() <-chan struct{} {
	s.init()
	return s.done
}

// Close tells the streams to end (Done) and waits until they have all
// returned. It may be called more than once.
func (s *Streams) Close() {
	s.init()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	s.wg.Wait()
}
