package asyncinfer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/payload"
	"github.com/nereid-project/nereid/server/frontend"
	"github.com/nereid-project/nereid/server/v2wire"
)

// Content types of stored responses, as the HTTP port sends them.
const (
	contentTypeJSON   = "application/json"
	contentTypeBinary = "application/octet-stream"
)

// errDecoupled refuses a model that answers 0..N times: a result holds
// one response.
var errDecoupled = inference.Unsupported("asynchronous inference doesn't support models with decoupled transaction policy")

// outcome is what one execution produced.
type outcome struct {
	err error
	// resultType, headerLength and size describe the response body
	// written to results/<id> when err is nil, or held in inline.
	resultType   string
	headerLength int64
	size         int64
	inline       []byte
}

// execute runs one request: it marks it running (counting the attempt),
// runs it and records its outcome. An execution cut off by Shutdown
// leaves the request pending, its attempt uncounted.
func (s *Service) execute(id string) {
	rec, err := s.store.modify(id, func(r *Record) bool {
		r.State, r.Started, r.Attempts = StateRunning, time.Now(), r.Attempts+1
		return true
	})
	if err != nil {
		// Nothing ran: the request stays as it was in the store (pending
		// or gone) and runs at the next start if it is there.
		s.log.Error().Err(err).Str("id", id).Msg("cannot start an asynchronous request")
		return
	}
	out := s.infer(s.runCtx, rec)
	if out.err != nil && s.runCtx.Err() != nil {
		if _, err := s.store.modify(id, func(r *Record) bool {
			r.State, r.Started, r.Attempts = StatePending, time.Time{}, r.Attempts-1
			return true
		}); err != nil {
			s.log.Error().Err(err).Str("id", id).Msg("cannot put an interrupted asynchronous request back")
		}
		s.log.Info().Str("id", id).Str("model", rec.Model).Msg("asynchronous request interrupted by shutdown: it runs again at the next start")
		return
	}
	s.finish(rec, out)
}

// finish records a request's outcome, removes its body, counts it, arms
// its expiry and notifies its webhook.
func (s *Service) finish(rec *Record, out outcome) {
	now := time.Now()
	// The outcome, its inline result and the removal of an inline body
	// are one transaction.
	done, err := s.store.modifyWith(rec.ID, func(r *Record) bool {
		r.Finished = now
		if out.err != nil {
			r.State, r.Reason, r.Status = StateFailed, out.err.Error(), httpStatus(out.err)
		} else {
			r.State, r.ResultType, r.ResultHeaderLength, r.ResultBytes = StateDone, out.resultType, out.headerLength, out.size
			r.ResultInline = out.inline != nil
		}
		return true
	}, func(b buckets, r *Record) error {
		if r.ResultInline {
			if err := b.results.Put([]byte(r.ID), out.inline); err != nil {
				return err
			}
		}
		return b.bodies.Delete([]byte(r.ID))
	})
	if err != nil {
		// Deleted meanwhile (not possible while running), or the store
		// failed: the request runs again at the next start.
		s.log.Error().Err(err).Str("id", rec.ID).Msg("cannot record an asynchronous outcome")
		os.Remove(s.store.resultPath(rec.ID))
		return
	}
	if err := os.Remove(s.store.requestPath(rec.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn().Err(err).Str("id", rec.ID).Msg("removing an asynchronous request body")
	}
	if out.err != nil {
		s.log.Info().Err(out.err).Str("id", rec.ID).Str("model", rec.Model).Msg("asynchronous request failed")
	} else {
		s.log.Debug().Str("id", rec.ID).Str("model", rec.Model).Dur("took", now.Sub(done.Started)).Msg("asynchronous request done")
	}
	s.met.finished(done)
	s.addExpiry(done.ID, done.Finished)
	if done.Webhook != "" {
		s.note.enqueue(done)
	}
	if s.opts.finished != nil {
		s.opts.finished(done)
	}
}

// infer decodes the stored body with the v2 codec, runs it through the
// core and writes the encoded response to results/<id>.
func (s *Service) infer(ctx context.Context, rec *Record) outcome {
	var body []byte
	unmap := func() {}
	var err error
	if rec.BodyInline {
		body, err = s.store.blob(bucketBodies, rec.ID)
	} else {
		body, unmap, err = mapFile(s.store.requestPath(rec.ID))
	}
	if err != nil {
		return outcome{err: inference.Internal("the stored request body cannot be read: %v", err)}
	}
	c := &v2wire.Call{}
	c.Req.ModelName, c.Req.ModelVersion, c.Req.Arrival = rec.Model, rec.Version, time.Now()
	switch hdr := rec.HeaderLength; {
	case hdr == 0:
		// Only the raw form needs the configuration: the shape and data
		// type of the model's one input.
		cfg, cerr := s.core.ModelConfig(ctx, rec.Model, rec.Version)
		if err = cerr; err == nil {
			err = v2wire.DecodeRaw(c, body, cfg)
		}
	case hdr < 0:
		err = v2wire.DecodeJSON(c, body, nil)
	case hdr > int64(len(body)): // checked at submission
		err = inference.Internal("the stored request body is shorter than its inference header")
	default:
		err = v2wire.DecodeJSON(c, body[:hdr], body[hdr:])
	}
	for k, v := range rec.Params {
		c.Param(k, v)
	}
	var resp *inference.Response
	if err == nil {
		resp, err = s.core.Infer(ctx, &c.Req)
		if err == nil && resp == nil {
			err = inference.Internal("model '%s' returned no response", rec.Model)
		}
	}
	if err != nil {
		resp.Done()
		if ctx.Err() != nil {
			// Cancelled: the core returned without waiting for the
			// backend, which may still read the inputs in the mapping.
			// Leave it mapped; the process is stopping.
			return outcome{err: err}
		}
		unmap()
		if errors.Is(err, inference.ErrDecoupled) {
			err = errDecoupled
		}
		return outcome{err: err}
	}
	out := s.writeResult(rec.ID, c, resp)
	resp.Done()
	unmap()
	return out
}

// resultSlack is the room the encoder gets for the JSON beside the
// binary outputs' bytes.
const resultSlack = 64 << 10

// writeResult encodes resp as the HTTP port would answer it and writes
// it to results/<id>, durably.
func (s *Service) writeResult(id string, c *v2wire.Call, resp *inference.Response) outcome {
	n := resultSlack
	for i := range resp.Outputs {
		n += len(resp.Outputs[i].Data)
	}
	// A large response is encoded into memory mapped for it, which goes
	// back to the OS at once instead of growing the heap.
	buf := payload.Alloc(n)
	defer payload.Free(buf)
	enc, hdrLen, binary, err := v2wire.AppendResponse(buf[:0], c, resp)
	if err != nil {
		return outcome{err: err}
	}
	out := outcome{resultType: contentTypeJSON, headerLength: -1, size: int64(len(enc))}
	if binary {
		out.resultType, out.headerLength = contentTypeBinary, int64(hdrLen)
	}
	if len(enc) <= inlineMax {
		out.inline = append(make([]byte, 0, len(enc)), enc...) // stored with the outcome
		return out
	}
	path := s.store.resultPath(id)
	if err := writeFileSync(path, enc); err != nil {
		os.Remove(path)
		return outcome{err: inference.Internal("the result cannot be stored: %v", err)}
	}
	return out
}

// writeFileSync writes b to path (through a temporary name, so that a
// result file is always whole) and syncs it.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// syncDir makes the names created in dir durable: a file's own fsync
// does not cover its directory entry on every file system.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mapFile maps a stored body into memory, copy-on-write: the decoder's
// tensors alias it without a copy on the heap, and a backend that writes
// to its inputs changes only its own pages. unmap releases it.
func mapFile(path string) (body []byte, unmap func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if fi.Size() == 0 {
		return []byte{}, func() {}, nil
	}
	if fi.Size() > int64(int(^uint(0)>>1)) {
		return nil, nil, fmt.Errorf("%s is too large to map", path)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}

// httpStatus maps an error to its HTTP status, as the HTTP port does
// (frontend.HTTPStatus).
func httpStatus(err error) int { return frontend.HTTPStatus(err) }
