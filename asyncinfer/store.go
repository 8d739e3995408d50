package asyncinfer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// State is where a request is in its life.
type State string

// The states of a request. Pending and running requests are the queue;
// done and failed ones keep their result or reason until they expire.
const (
	StatePending State = "pending"
	StateRunning State = "running"
	StateDone    State = "done"
	StateFailed  State = "failed"
)

// finished reports whether a request in state st has its outcome.
func (st State) finished() bool { return st == StateDone || st == StateFailed }

// Record is one asynchronous request as the store keeps it. The request
// body is the file requests/<ID>, the response body results/<ID>.
type Record struct {
	ID      string `json:"id"`
	Seq     uint64 `json:"seq"` // submission order
	Model   string `json:"model"`
	Version string `json:"version,omitempty"`
	// ContentType is the request's Content-Type as sent. HeaderLength is
	// its Inference-Header-Content-Length (-1: none, the body is JSON).
	ContentType  string `json:"content_type,omitempty"`
	HeaderLength int64  `json:"header_length"`
	BodyBytes    int64  `json:"body_bytes"`
	// Params are the request headers --http-header-forward-pattern
	// forwards as request parameters.
	Params map[string]string `json:"params,omitempty"`
	// ResultURL is where the result is fetched, as the submitter saw the
	// server; Webhook the URL notified of the outcome, if any.
	ResultURL string `json:"result_url"`
	Webhook   string `json:"webhook,omitempty"`

	State State `json:"state"`
	// Reason says why a request failed; Status is the HTTP status that
	// fetching its result answers with.
	Reason string `json:"reason,omitempty"`
	Status int    `json:"status,omitempty"`
	// Created is when the request was accepted, its body stored.
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Attempts counts the executions started. One that was running when
	// the process died counts: after MaxAttempts of them the request fails.
	Attempts int `json:"attempts"`

	// ResultType and ResultHeaderLength describe a done request's
	// response body: its Content-Type, and for binary tensor data the
	// length of its JSON part (Inference-Header-Content-Length; -1: JSON
	// only).
	ResultType         string `json:"result_type,omitempty"`
	ResultHeaderLength int64  `json:"result_header_length,omitempty"`
	ResultBytes        int64  `json:"result_bytes,omitempty"`
	// Notified is set once the webhook got the outcome, or gave up:
	// an outcome not yet notified is notified again after a restart.
	Notified bool `json:"notified,omitempty"`
	// BodyInline and ResultInline: the body, or the response, is small
	// enough to be kept in the database itself rather than in a file.
	BodyInline   bool `json:"body_inline,omitempty"`
	ResultInline bool `json:"result_inline,omitempty"`
}

// The database's buckets, each keyed by request id: the records, and the
// request and response bodies small enough to live in the database (up to
// inlineMax bytes): one transaction, and so one group of fsyncs, stores
// such a request or its outcome, where a file would need a sync of its
// own.
var (
	bucketRecords = []byte("records")
	bucketBodies  = []byte("bodies")
	bucketResults = []byte("results")
)

// inlineMax is the largest body kept in the database.
const inlineMax = 64 << 10

// buckets are the buckets of one read-write transaction.
type buckets struct{ records, bodies, results *bolt.Bucket }

func bucketsOf(tx *bolt.Tx) buckets {
	return buckets{tx.Bucket(bucketRecords), tx.Bucket(bucketBodies), tx.Bucket(bucketResults)}
}

// errNoRecord is a store lookup of an id it does not hold.
var errNoRecord = errors.New("no such request")

// store is the durable part of the queue: the records in a bbolt
// database (<dir>/queue.db) and the bodies in files beside it. Writes go
// through one committer goroutine that puts every write waiting at the
// time in one transaction, so that concurrent submissions share their
// fsyncs instead of queueing behind each other's.
type store struct {
	dir string
	db  *bolt.DB

	writes chan *write
	done   chan struct{} // closed when the committer has returned
	// closeMu guards closed: close must not race a write's send.
	closeMu sync.RWMutex
	closed  bool
}

// write is one update waiting for the committer: fn runs in a read-write
// transaction, which may be retried alone when a group's fails, so it must
// be idempotent.
type write struct {
	fn  func(buckets) error
	err chan error // capacity 1
}

// maxGroup bounds the writes committed in one transaction.
const maxGroup = 256

// openStore opens (creating) the store in dir. Another process holding it
// is an error after lockTimeout.
func openStore(dir string, lockTimeout time.Duration) (*store, error) {
	for _, sub := range []string{"", requestsDir, resultsDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("async store: %w", err)
		}
	}
	path := filepath.Join(dir, "queue.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The freelist is rebuilt at open instead of written on every
		// commit, as etcd does: fewer pages per fsync.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("async store %s is in use by another process (one Nereid per --async-dir)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("async store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketBodies, bucketResults} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("async store %s: %w", path, err)
	}
	s := &store{dir: dir, db: db, writes: make(chan *write, maxGroup), done: make(chan struct{})}
	go s.commit()
	return s, nil
}

const (
	requestsDir = "requests"
	resultsDir  = "results"
)

func (s *store) requestPath(id string) string { return filepath.Join(s.dir, requestsDir, id) }
func (s *store) resultPath(id string) string  { return filepath.Join(s.dir, resultsDir, id) }

// close stops the committer once the writes already sent are committed,
// and closes the database.
func (s *store) close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.writes)
	s.closeMu.Unlock()
	<-s.done
	return s.db.Close()
}

var errStoreClosed = errors.New("async store is closed")

// update runs fn in a read-write transaction, grouped with the other
// writes waiting, and returns once it is durable.
func (s *store) update(fn func(buckets) error) error {
	w := &write{fn: fn, err: make(chan error, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return errStoreClosed
	}
	s.writes <- w
	s.closeMu.RUnlock()
	return <-w.err
}

// commit is the committer: it takes the first write waiting, every other
// one already waiting, and commits them in one transaction. A group whose
// transaction fails is retried one write at a time, so that one bad write
// fails alone.
func (s *store) commit() {
	defer close(s.done)
	group := make([]*write, 0, maxGroup)
	for w := range s.writes {
		group = append(group[:0], w)
	more:
		for len(group) < maxGroup {
			select {
			case w, ok := <-s.writes:
				if !ok {
					break more
				}
				group = append(group, w)
			default:
				break more
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := bucketsOf(tx)
			for _, w := range group {
				if err := w.fn(b); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil || len(group) == 1 {
			for _, w := range group {
				w.err <- err
			}
			continue
		}
		for _, w := range group {
			w.err <- s.db.Update(func(tx *bolt.Tx) error { return w.fn(bucketsOf(tx)) })
		}
	}
}

// insert writes a new record, giving it the next submission number, with
// its body when the body is kept in the database.
func (s *store) insert(rec *Record, body []byte) error {
	return s.update(func(b buckets) error {
		seq, err := b.records.NextSequence()
		if err != nil {
			return err
		}
		r := *rec
		r.Seq = seq
		v, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		if err := b.records.Put([]byte(r.ID), v); err != nil {
			return err
		}
		if r.BodyInline {
			if err := b.bodies.Put([]byte(r.ID), body); err != nil {
				return err
			}
		}
		rec.Seq = seq
		return nil
	})
}

// modify reads the record id, lets fn change it and writes it back; fn
// returning false leaves it as it was. errNoRecord when there is none.
func (s *store) modify(id string, fn func(*Record) bool) (*Record, error) {
	return s.modifyWith(id, fn, nil)
}

// modifyWith is modify, and then more, in the same transaction when the
// record changed.
func (s *store) modifyWith(id string, fn func(*Record) bool, more func(buckets, *Record) error) (*Record, error) {
	var out *Record
	err := s.update(func(b buckets) error {
		out = nil
		v := b.records.Get([]byte(id))
		if v == nil {
			return errNoRecord
		}
		var rec Record
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("async record %s: %w", id, err)
		}
		out = &rec
		if !fn(&rec) {
			return nil
		}
		nv, err := json.Marshal(&rec)
		if err != nil {
			return err
		}
		if err := b.records.Put([]byte(id), nv); err != nil {
			return err
		}
		if more != nil {
			return more(b, &rec)
		}
		return nil
	})
	return out, err
}

// remove deletes the request id: its record and its bodies.
func (s *store) remove(id string) error {
	err := s.update(func(b buckets) error {
		k := []byte(id)
		return errors.Join(b.records.Delete(k), b.bodies.Delete(k), b.results.Delete(k))
	})
	for _, p := range []string{s.requestPath(id), s.resultPath(id)} {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}

// blob returns a copy of the value of id in bucket: a body kept in the
// database. errNoRecord when there is none.
func (s *store) blob(bucket []byte, id string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(id))
		if v == nil {
			return errNoRecord
		}
		out = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	return out, err
}

// get reads the record id; errNoRecord when there is none.
func (s *store) get(id string) (*Record, error) {
	var rec Record
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get([]byte(id))
		if v == nil {
			return errNoRecord
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// all reads every record. One that cannot be decoded is returned by id
// in bad, to be removed.
func (s *store) all() (recs []*Record, bad []string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			rec := new(Record)
			if err := json.Unmarshal(v, rec); err != nil || rec.ID != string(k) {
				bad = append(bad, string(k))
				return nil
			}
			recs = append(recs, rec)
			return nil
		})
	})
	return recs, bad, err
}
