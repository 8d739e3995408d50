// Command deploytool checks Nereid's deployment files offline: it lints
// deploy/Dockerfile with BuildKit's own build checks, converts Kubernetes' OpenAPI document and CRDs into the JSON
// schemas kubeconform reads, turns YAML into JSON for the tests, and
// assembles an OCI image layout from file trees without a container
// daemon. It is its own Go module so that BuildKit's and
// go-containerregistry's dependencies stay out of the server's go.mod.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage: deploytool COMMAND [ARGS]

  lint-dockerfile FILE        BuildKit's build checks (docker build --check);
                              exit 1 on any finding
  dockerfile-summary FILE     the stages, base images, users, ports, entrypoints
                              and ARG defaults as JSON
  schemas -out DIR [-swagger FILE] [CRD.yaml...]
                              kubeconform JSON schemas from Kubernetes' swagger.json
                              and from CustomResourceDefinitions
  yaml2json                   multi-document YAML on stdin to a JSON array on stdout
  oci -out DIR -tag REF [-layer DIR]... [-config JSON]
                              an OCI image layout, one layer per directory
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "lint-dockerfile":
		var findings int
		findings, err = lintDockerfileCmd(args[1:], stdout)
		if err == nil && findings > 0 {
			fmt.Fprintf(stderr, "%d finding(s)\n", findings)
			return 1
		}
	case "dockerfile-summary":
		err = summaryCmd(args[1:], stdout)
	case "schemas":
		err = schemasCmd(args[1:], stderr)
	case "yaml2json":
		err = yaml2jsonCmd(stdin, stdout)
	case "oci":
		err = ociCmd(args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "deploytool: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "deploytool:", err)
		return 1
	}
	return 0
}
