package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"

	"github.com/rs/zerolog"

	"github.com/nereid-project/nereid/tlsfiles"
)

// tlsFlags are one listener's TLS flags, named as Triton names gRPC's:
// --<p>-use-ssl, --<p>-use-ssl-mutual, --<p>-server-cert, --<p>-server-key,
// --<p>-root-cert. Triton has them for gRPC only; Nereid adds them for the
// HTTP and metrics ports.
type tlsFlags struct {
	prefix              string
	useSSL, mutual      bool
	cert, key, rootCert string
}

func (t *tlsFlags) register(fs *flag.FlagSet, what string, nereidOnly bool) {
	own := ""
	if nereidOnly {
		own = "; Nereid only"
	}
	p := t.prefix
	fs.BoolVar(&t.useSSL, p+"-use-ssl", false, "serve "+what+" over TLS (needs --"+p+"-server-cert and --"+p+"-server-key"+own+")")
	fs.BoolVar(&t.mutual, p+"-use-ssl-mutual", false, "serve "+what+" over mutual TLS: clients must present a certificate signed by --"+p+"-root-cert (implies --"+p+"-use-ssl"+own+")")
	fs.StringVar(&t.cert, p+"-server-cert", "", "PEM file of the "+what+" server certificate; re-read when it changes"+own)
	fs.StringVar(&t.key, p+"-server-key", "", "PEM file of the "+what+" server key; re-read when it changes"+own)
	fs.StringVar(&t.rootCert, p+"-root-cert", "", "PEM file of the CA certificates "+what+" client certificates are verified against (mutual TLS"+own+")")
}

func (t *tlsFlags) finish() error {
	p := t.prefix
	if t.mutual {
		t.useSSL = true
	}
	if !t.useSSL && (t.cert != "" || t.key != "" || t.rootCert != "") {
		return fmt.Errorf("--%s-server-cert, --%s-server-key and --%s-root-cert need --%s-use-ssl=true "+
			"(Nereid refuses to serve plaintext with certificates given)", p, p, p, p)
	}
	if t.useSSL && (t.cert == "" || t.key == "") {
		return fmt.Errorf("--%s-use-ssl needs --%s-server-cert and --%s-server-key", p, p, p)
	}
	if t.mutual && t.rootCert == "" {
		return fmt.Errorf("--%s-use-ssl-mutual needs --%s-root-cert", p, p)
	}
	return nil
}

// config returns the listener's TLS configuration, nil when TLS is off.
func (t *tlsFlags) config(log zerolog.Logger, nextProtos ...string) (*tls.Config, error) {
	if !t.useSSL {
		return nil, nil
	}
	src, err := tlsfiles.New(tlsfiles.Files{Cert: t.cert, Key: t.key, RootCert: t.rootCert, Mutual: t.mutual},
		func(err error) { log.Error().Err(err).Str("listener", t.prefix).Msg("TLS certificate reload") })
	if err != nil {
		return nil, fmt.Errorf("--%s TLS: %w", t.prefix, err)
	}
	return src.Config(nextProtos...), nil
}

// wrap serves ln over TLS when the flags ask for it.
func (t *tlsFlags) wrap(ln net.Listener, log zerolog.Logger) (net.Listener, error) {
	cfg, err := t.config(log, "http/1.1")
	if err != nil || cfg == nil {
		return ln, err
	}
	return tls.NewListener(ln, cfg), nil
}
