package batch

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"

	"github.com/nereid-project/nereid/inference"
)

// source reads the records of one input file in order, unparsed: a
// JSONL line or a CSV row each (parser.parse reads them, on the workers).
// next returns io.EOF after the last; any other error is the file's (it
// cannot be read), not a record's, and ends the job. With keep false the
// record is only counted (its line and size are set): it belongs to a
// finished shard.
type source interface {
	next(keep bool) (*record, error)
}

// jsonlSource reads one record per non-blank line.
type jsonlSource struct {
	r        *bufio.Reader
	line     int
	maxBytes int
	buf      []byte
}

func newJSONLSource(r io.Reader, maxBytes int) *jsonlSource {
	return &jsonlSource{r: bufio.NewReaderSize(r, 1<<16), maxBytes: maxBytes}
}

func (s *jsonlSource) next(keep bool) (*record, error) {
	var size int64 // blank lines count with the record after them
	for {
		line, n, tooLong, err := s.readLine()
		if err != nil {
			return nil, err
		}
		size += n
		s.line++
		if tooLong {
			return &record{line: s.line, size: size, err: inference.InvalidArg("the line is longer than %d bytes", s.maxBytes)}, nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		rec := &record{line: s.line, size: size}
		if keep {
			rec.raw = bytes.Clone(line)
		}
		return rec, nil
	}
}

// readLine returns the next line without its newline, and how many bytes
// it took; a line longer than maxBytes is consumed and reported as too
// long rather than held in memory.
func (s *jsonlSource) readLine() (line []byte, size int64, tooLong bool, err error) {
	s.buf = s.buf[:0]
	for {
		frag, err := s.r.ReadSlice('\n')
		size += int64(len(frag))
		if !tooLong {
			if len(s.buf)+len(frag) > s.maxBytes+1 {
				tooLong, s.buf = true, s.buf[:0]
			} else {
				s.buf = append(s.buf, frag...)
			}
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(s.buf, []byte{'\n'}), size, tooLong, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if size == 0 {
				return nil, 0, false, io.EOF
			}
			return s.buf, size, tooLong, nil
		default:
			return nil, 0, false, err
		}
	}
}

// csvSource reads one record per row after the header.
type csvSource struct {
	r      *csv.Reader
	layout *csvLayout // nil for a file without a header
	prev   int64      // input offset after the previous row
}

func newCSVSource(r io.Reader, m *Model) (*csvSource, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return &csvSource{r: cr}, nil // no header, no records
	}
	if err != nil {
		return nil, fmt.Errorf("the header row: %w", err)
	}
	l, err := newCSVLayout(m, header)
	if err != nil {
		return nil, err
	}
	return &csvSource{r: cr, layout: l, prev: cr.InputOffset()}, nil
}

func (s *csvSource) next(keep bool) (*record, error) {
	if s.layout == nil {
		return nil, io.EOF
	}
	fields, err := s.r.Read()
	size := s.r.InputOffset() - s.prev
	s.prev = s.r.InputOffset()
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		msg := pe.Err.Error()
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			msg = fmt.Sprintf("the row has %d fields, the header %d", len(fields), len(s.layout.header))
		}
		return &record{line: pe.StartLine, size: size, err: inference.InvalidArg("%s", msg)}, nil
	}
	if err != nil {
		return nil, err
	}
	line, _ := s.r.FieldPos(0)
	rec := &record{line: line, size: size}
	if keep {
		rec.fields, rec.layout = fields, s.layout
	}
	return rec, nil
}
