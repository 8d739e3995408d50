package python

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// maxFrame bounds one frame's JSON body (PROTOCOL.md).
const maxFrame = 64 << 20

// conn is the parent's end of a stub's socket: frames out from any
// goroutine (one at a time), frames in on one reader goroutine, and the
// file descriptors that arrive with them.
type conn struct {
	uc *net.UnixConn

	wmu sync.Mutex // serializes frames out

	// Reader state, owned by the one goroutine that calls readFrame.
	buf  []byte
	r, w int
	fds  []int // received, not yet taken, in arrival order
	oob  []byte
}

// socketPair returns the parent's conn and the file to hand the stub as
// its descriptor 3.
func socketPair() (*conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "python-stub-child")
	c, err := newConn(fds[0])
	if err != nil {
		_ = child.Close()
		return nil, nil, err
	}
	return c, child, nil
}

// newConn makes a conn of a connected Unix socket, which it takes over.
func newConn(fd int) (*conn, error) {
	f := os.NewFile(uintptr(fd), "python-stub-socket")
	fc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("python stub socket: %w", err)
	}
	return &conn{uc: fc.(*net.UnixConn), buf: make([]byte, 64<<10), oob: make([]byte, unix.CmsgSpace(16*4))}, nil
}

// writeFrame sends body (a frame whose first 4 bytes are reserved for the
// length) with fd attached when fd ≥ 0.
func (c *conn) writeFrame(frame []byte, fd int) error {
	n := len(frame) - 4
	if n <= 0 || n > maxFrame {
		return fmt.Errorf("frame of %d bytes", n)
	}
	binary.LittleEndian.PutUint32(frame, uint32(n))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if fd < 0 {
		_, err := c.uc.Write(frame)
		return err
	}
	w, _, err := c.uc.WriteMsgUnix(frame, unix.UnixRights(fd), nil)
	if err != nil {
		return err
	}
	if w < len(frame) {
		_, err = c.uc.Write(frame[w:])
	}
	return err
}

var errBadFrame = errors.New("bad frame length")

// readFrame returns the next frame's body, valid until the next call.
func (c *conn) readFrame() ([]byte, error) {
	for {
		if c.w-c.r >= 4 {
			n := int(binary.LittleEndian.Uint32(c.buf[c.r:]))
			if n == 0 || n > maxFrame {
				return nil, fmt.Errorf("%w: %d", errBadFrame, n)
			}
			if c.w-c.r >= 4+n {
				body := c.buf[c.r+4 : c.r+4+n]
				c.r += 4 + n
				return body, nil
			}
			if 4+n > len(c.buf) {
				nb := make([]byte, 4+n)
				c.w = copy(nb, c.buf[c.r:c.w])
				c.r = 0
				c.buf = nb
			}
		}
		if c.r > 0 && (c.r == c.w || len(c.buf)-c.w < 4096) {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		n, oobn, _, _, err := c.uc.ReadMsgUnix(c.buf[c.w:], c.oob)
		if oobn > 0 {
			c.takeRights(c.oob[:oobn])
		}
		c.w += n
		if err != nil {
			if errors.Is(err, io.EOF) && n > 0 {
				continue
			}
			return nil, err
		}
		if n == 0 {
			return nil, io.EOF
		}
	}
}

func (c *conn) takeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			c.fds = append(c.fds, fds...)
		}
	}
}

// takeFD returns the oldest descriptor received and not yet taken.
func (c *conn) takeFD() (int, bool) {
	if len(c.fds) == 0 {
		return -1, false
	}
	fd := c.fds[0]
	c.fds = c.fds[1:]
	return fd, true
}

// close closes the socket and every descriptor not taken.
func (c *conn) close() {
	_ = c.uc.Close()
	for _, fd := range c.fds {
		_ = unix.Close(fd)
	}
	c.fds = nil
}
