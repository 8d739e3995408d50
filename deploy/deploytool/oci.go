package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// ociCmd assembles an OCI image layout without a daemon: one layer per
// -layer folder (owned by root, timestamps at the epoch, so the digests
// depend on the files alone), and the configuration of a Dockerfile
// target (user, ports, entrypoint, command, working directory,
// environment). It prints the layers' and the image's sizes as JSON.
func ociCmd(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("oci", flag.ContinueOnError)
	out := fl.String("out", "", "OCI layout folder to write")
	tag := fl.String("tag", "", "reference name of the image in the layout (org.opencontainers.image.ref.name)")
	dockerfile := fl.String("dockerfile", "", "take the configuration from this Dockerfile")
	target := fl.String("target", "", "the Dockerfile's stage (default: the last)")
	var layers, env, owners stringList
	fl.Var(&layers, "layer", "a folder that becomes one layer (repeatable, bottom first)")
	fl.Var(&env, "env", "KEY=VALUE added to the configuration (repeatable)")
	fl.Var(&owners, "owner", "PATH=UID:GID: the owner of PATH (relative to the layer) and all below it; others are root's (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	own, err := parseOwners(owners)
	if err != nil {
		return err
	}
	if *out == "" || len(layers) == 0 {
		return errors.New("oci: -out and at least one -layer are required")
	}
	cfg := v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	if *dockerfile != "" {
		if err := configFromDockerfile(*dockerfile, *target, &cfg); err != nil {
			return err
		}
	}
	cfg.Env = append(cfg.Env, env...)

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	type layerSize struct {
		Dir          string `json:"dir"`
		Digest       string `json:"digest"`
		Compressed   int64  `json:"compressed_bytes"`
		Uncompressed int64  `json:"uncompressed_bytes"`
	}
	var sizes []layerSize
	for _, dir := range layers {
		tb, err := tarDir(dir, own)
		if err != nil {
			return err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tb)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return err
		}
		d, err := l.Digest()
		if err != nil {
			return err
		}
		c, err := l.Size()
		if err != nil {
			return err
		}
		sizes = append(sizes, layerSize{Dir: dir, Digest: d.String(), Compressed: c, Uncompressed: int64(len(tb))})
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = cfg
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	p, err := layout.Write(*out, empty.Index)
	if err != nil {
		return err
	}
	var opts []layout.Option
	if *tag != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": *tag}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	var compressed, uncompressed int64
	for _, s := range sizes {
		compressed += s.Compressed
		uncompressed += s.Uncompressed
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{
		"digest": d.String(), "layers": sizes, "config": cfg,
		"compressed_bytes": compressed, "uncompressed_bytes": uncompressed,
	})
}

func configFromDockerfile(path, target string, cfg *v1.Config) error {
	var buf bytes.Buffer
	if err := summaryCmd([]string{path}, &buf); err != nil {
		return err
	}
	var sum summary
	if err := json.Unmarshal(buf.Bytes(), &sum); err != nil {
		return err
	}
	if len(sum.Stages) == 0 {
		return errors.New("the Dockerfile has no stage")
	}
	st := sum.Stages[len(sum.Stages)-1]
	if target != "" {
		found := false
		for _, s := range sum.Stages {
			if s.Name == target {
				st, found = s, true
			}
		}
		if !found {
			return fmt.Errorf("the Dockerfile has no stage %q", target)
		}
	}
	cfg.User, cfg.WorkingDir = st.User, st.Workdir
	if len(st.Labels) > 0 {
		cfg.Labels = st.Labels
	}
	cfg.Entrypoint, cfg.Cmd = st.Entrypoint, st.Cmd
	if len(st.Expose) > 0 {
		cfg.ExposedPorts = map[string]struct{}{}
		for _, p := range st.Expose {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			cfg.ExposedPorts[p] = struct{}{}
		}
	}
	keys := make([]string, 0, len(st.Env))
	for k := range st.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg.Env = append(cfg.Env, k+"="+st.Env[k])
	}
	return nil
}

type owner struct {
	path     string // relative, slash-separated, no trailing slash
	uid, gid int
}

func parseOwners(specs []string) ([]owner, error) {
	var out []owner
	for _, s := range specs {
		p, ids, ok := strings.Cut(s, "=")
		u, g, ok2 := strings.Cut(ids, ":")
		var o owner
		_, err := fmt.Sscanf(u+" "+g, "%d %d", &o.uid, &o.gid)
		if !ok || !ok2 || err != nil || strings.Trim(p, "/") == "" {
			return nil, fmt.Errorf("-owner %q: want PATH=UID:GID", s)
		}
		o.path = strings.Trim(filepath.ToSlash(p), "/")
		out = append(out, o)
	}
	return out, nil
}

// ownerOf is the owner of a layer path: the longest -owner prefix, else root.
func ownerOf(name string, owners []owner) (uid, gid int) {
	best := -1
	for _, o := range owners {
		if (name == o.path || strings.HasPrefix(name, o.path+"/")) && len(o.path) > best {
			uid, gid, best = o.uid, o.gid, len(o.path)
		}
	}
	return uid, gid
}

// tarDir is the folder as an uncompressed tar, paths relative to it,
// sorted, owned by root unless owners say otherwise, modes kept, times at
// the epoch.
func tarDir(dir string, owners []owner) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil, err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = filepath.ToSlash(rel)
		h.Uid, h.Gid = ownerOf(h.Name, owners)
		h.Uname, h.Gname = "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		h.ModTime, h.AccessTime, h.ChangeTime = time.Unix(0, 0), time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
