package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
)

// finding is one problem of a Dockerfile, at a line.
type finding struct {
	Line int    `json:"line"`
	Rule string `json:"rule"`
	Text string `json:"text"`
}

func lintDockerfileCmd(args []string, stdout io.Writer) (int, error) {
	if len(args) != 1 {
		return 0, errors.New("usage: lint-dockerfile FILE")
	}
	dt, err := os.ReadFile(args[0])
	if err != nil {
		return 0, err
	}
	fs, err := lintDockerfile(args[0], dt)
	if err != nil {
		return 0, err
	}
	for _, f := range fs {
		fmt.Fprintf(stdout, "%s:%d: %s: %s\n", args[0], f.Line, f.Rule, f.Text)
	}
	return len(fs), nil
}

// lintDockerfile runs BuildKit's build checks: the rules `docker build
// --check` applies, on every stage. (hadolint, which the tests run too,
// has the shell-level rules.)
func lintDockerfile(name string, dt []byte) ([]finding, error) {
	ctx := context.Background()
	sm := llb.NewSourceMap(nil, name, "Dockerfile", dt)
	// The results name their source by an LLB definition; an empty one does.
	def, err := llb.Scratch().Marshal(ctx)
	if err != nil {
		return nil, err
	}
	sm.Definition = def
	res, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		SourceMap:    sm,
		MetaResolver: offlineResolver{},
	})
	if err != nil {
		return nil, err
	}
	var out []finding
	if res.Error != nil {
		out = append(out, finding{Line: pbLine(&res.Error.Location), Rule: "BuildError", Text: res.Error.Message})
	}
	for _, w := range res.Warnings {
		out = append(out, finding{Line: pbLine(w.Location), Rule: w.RuleName, Text: w.Detail})
	}
	slices.SortStableFunc(out, func(a, b finding) int { return a.Line - b.Line })
	return out, nil
}

func pbLine(loc *pb.Location) int {
	if r := loc.GetRanges(); len(r) > 0 {
		return int(r[0].GetStart().GetLine())
	}
	return 0
}

// offlineResolver stands in for a registry: the checks need a base
// image's configuration only for the variables it defines (UndefinedVar),
// and this machine reaches no registry. Every base image gets an empty
// configuration with the usual PATH.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	return ref, digest.FromBytes(cfg), cfg, nil
}

// argRef is a reference to a build argument in a FROM line.
var argRef = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)

// usedStages are the stages another stage builds on or copies from: the
// others are targets, whose user the image runs as.
func usedStages(stages []instructions.Stage, defaults map[string]string) map[string]bool {
	used := map[string]bool{}
	for _, s := range stages {
		used[strings.ToLower(expand(s.BaseName, defaults))] = true
		// FROM tf-${WITH_TENSORFLOW}: any stage the argument can name. A
		// name that is all argument (FROM ${GO_IMAGE}) names an image.
		if glob := argRef.ReplaceAllString(strings.ToLower(s.BaseName), "*"); strings.Trim(glob, "*") != "" && glob != strings.ToLower(s.BaseName) {
			for _, o := range stages {
				if ok, _ := path.Match(glob, strings.ToLower(o.Name)); ok {
					used[strings.ToLower(o.Name)] = true
				}
			}
		}
		for _, cmd := range s.Commands {
			if c, ok := cmd.(*instructions.CopyCommand); ok && c.From != "" {
				used[strings.ToLower(c.From)] = true
			}
		}
	}
	return used
}

func argDefaults(metaArgs []instructions.ArgCommand) map[string]string {
	m := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				m[kv.Key] = *kv.Value
			} else {
				m[kv.Key] = ""
			}
		}
	}
	return m
}

// expand substitutes the ARG defaults into a FROM line's image name.
func expand(s string, vars map[string]string) string {
	lex := shell.NewLex('\\')
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	res, err := lex.ProcessWordWithMatches(s, shell.EnvsFromSlice(env))
	if err != nil {
		return s
	}
	return res.Result
}

// ---- summary -----------------------------------------------------------------

type stageSummary struct {
	Name       string            `json:"name"`
	Base       string            `json:"base"`          // as written
	BaseImage  string            `json:"base_resolved"` // with the ARG defaults
	Target     bool              `json:"target"`        // no other stage uses it
	User       string            `json:"user"`
	Expose     []string          `json:"expose"`
	Entrypoint []string          `json:"entrypoint"`
	Cmd        []string          `json:"cmd"`
	Env        map[string]string `json:"env"`
	Workdir    string            `json:"workdir"`
	CopyFrom   []string          `json:"copy_from"`
	Args       map[string]string `json:"args"`
	Run        []string          `json:"run"`
	Labels     map[string]string `json:"labels"`
}

type summary struct {
	MetaArgs map[string]string `json:"meta_args"`
	Stages   []stageSummary    `json:"stages"`
}

func summaryCmd(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: dockerfile-summary FILE")
	}
	dt, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	ast, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return err
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return err
	}
	sum := summary{MetaArgs: argDefaults(metaArgs)}
	used := usedStages(stages, sum.MetaArgs)
	for _, s := range stages {
		ss := stageSummary{
			Name: s.Name, Base: s.BaseName, BaseImage: expand(s.BaseName, sum.MetaArgs),
			Target: !used[strings.ToLower(s.Name)], Env: map[string]string{}, Args: map[string]string{},
			Expose: []string{}, CopyFrom: []string{}, Run: []string{}, Labels: map[string]string{},
		}
		for _, cmd := range s.Commands {
			switch c := cmd.(type) {
			case *instructions.UserCommand:
				ss.User = c.User
			case *instructions.ExposeCommand:
				ss.Expose = append(ss.Expose, c.Ports...)
			case *instructions.EntrypointCommand:
				ss.Entrypoint = c.CmdLine
			case *instructions.CmdCommand:
				ss.Cmd = c.CmdLine
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					ss.Env[kv.Key] = expand(kv.Value, sum.MetaArgs)
				}
			case *instructions.WorkdirCommand:
				ss.Workdir = c.Path
			case *instructions.CopyCommand:
				if c.From != "" {
					ss.CopyFrom = append(ss.CopyFrom, c.From+":"+strings.Join(c.SourcePaths, ",")+"->"+c.DestPath)
				}
			case *instructions.ArgCommand:
				for _, kv := range c.Args {
					if kv.Value != nil {
						ss.Args[kv.Key] = *kv.Value
					}
				}
			case *instructions.RunCommand:
				ss.Run = append(ss.Run, strings.Join(c.CmdLine, " "))
			case *instructions.LabelCommand:
				for _, kv := range c.Labels {
					ss.Labels[kv.Key] = expand(kv.Value, sum.MetaArgs) // unquoted
				}
			}
		}
		sum.Stages = append(sum.Stages, ss)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(sum)
}
