package batch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// inputFile is one file of the data set. Each is one shard, or with
// --split-lines one shard per that many records.
type inputFile struct {
	Path   string `json:"path"` // absolute
	Size   int64  `json:"size"`
	format string // "jsonl" or "csv"
	base   string // the shard name: the file name without its extension
}

// formats maps file extensions to record formats.
var formats = map[string]string{".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}

// listInputs returns the files of --input: the file itself, or every
// .jsonl, .ndjson and .csv file in the directory (not below it), by name.
func listInputs(path string) ([]inputFile, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	var paths []string
	if st.IsDir() {
		entries, err := os.ReadDir(abs)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if _, ok := formats[strings.ToLower(filepath.Ext(e.Name()))]; ok && !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				paths = append(paths, filepath.Join(abs, e.Name()))
			}
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("%s holds no .jsonl, .ndjson or .csv files", path)
		}
	} else {
		if _, ok := formats[strings.ToLower(filepath.Ext(abs))]; !ok {
			return nil, fmt.Errorf("%s: the file name must end in .jsonl, .ndjson or .csv, which says how its records are written", path)
		}
		paths = []string{abs}
	}
	files := make([]inputFile, 0, len(paths))
	seen := map[string]string{}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		ext := filepath.Ext(p)
		base := strings.TrimSuffix(filepath.Base(p), ext)
		if other, dup := seen[base]; dup {
			return nil, fmt.Errorf("%s and %s would write the same output files (%s.out.jsonl): rename one", other, p, base)
		}
		seen[base] = p
		files = append(files, inputFile{Path: p, Size: st.Size(), format: formats[strings.ToLower(ext)], base: base})
	}
	return files, nil
}

// shardName is the name of part of a file: the file's base name, with
// the part number when the file is split.
func shardName(f inputFile, split, part int) string {
	if split <= 0 {
		return f.base
	}
	return fmt.Sprintf("%s-%05d", f.base, part)
}

// The files of a shard in the output directory. A shard being written
// has only the .tmp forms; they are renamed when the shard is complete.
func outName(shard string) string    { return shard + ".out.jsonl" }
func errorsName(shard string) string { return shard + ".errors.jsonl" }

const tmpSuffix = ".tmp"

// manifestName is the job's state in the output directory: which job it
// is, and which shards are finished.
const manifestName = "_manifest.json"

const manifestFormat = 1

// manifest is a job's identity and its finished shards. It is rewritten
// atomically (a new file renamed over the old) after each shard, and
// only after the shard's files are in place, so a shard it lists is
// complete.
type manifest struct {
	Format     int                  `json:"format"`
	Model      string               `json:"model"`
	Version    string               `json:"model_version,omitempty"`
	SplitLines int                  `json:"split_lines,omitempty"`
	Inputs     []inputFile          `json:"inputs"`
	Shards     map[string]shardDone `json:"shards"`
}

// shardDone is a finished shard's counts.
type shardDone struct {
	Records int64 `json:"records"`
	Errors  int64 `json:"errors"`
}

// loadManifest reads the manifest in dir; nil when there is none.
func loadManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, manifestName), err)
	}
	if m.Format != manifestFormat {
		return nil, fmt.Errorf("%s: format %d is not %d, which this nereid writes", filepath.Join(dir, manifestName), m.Format, manifestFormat)
	}
	return &m, nil
}

// sameJob checks that an output directory's manifest is this job's, so
// that a restart resumes it rather than mixing two jobs' results.
func (m *manifest) sameJob(dir string, prev *manifest) error {
	var diffs []string
	if prev.Model != m.Model || prev.Version != m.Version {
		diffs = append(diffs, fmt.Sprintf("model '%s' version '%s', not '%s' version '%s'", prev.Model, prev.Version, m.Model, m.Version))
	}
	if prev.SplitLines != m.SplitLines {
		diffs = append(diffs, fmt.Sprintf("--split-lines=%d, not %d", prev.SplitLines, m.SplitLines))
	}
	if !slices.EqualFunc(prev.Inputs, m.Inputs, func(a, b inputFile) bool { return a.Path == b.Path && a.Size == b.Size }) {
		diffs = append(diffs, "other input files (or the same files with other sizes)")
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%s holds the results of another job (%s): use another --output, or remove it to start over",
		dir, strings.Join(diffs, "; "))
}

func (m *manifest) write(dir string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, manifestName, append(b, '\n'))
}

// writeFileAtomic replaces dir/name with data: a new file, synced, renamed
// over the old one, and the directory synced, so that a crash leaves the
// old content or the new, never a part.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, name+".*"+tmpSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(0o644)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// syncDir makes the renames in dir durable.
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
