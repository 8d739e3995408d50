package main

import "github.com/rs/zerolog"

// backendSetups configure the backends that need the server's settings
// before models load. Backends built only with cgo add theirs from files
// with that build tag.
var backendSetups []func(c *config, log zerolog.Logger) error

func setupBackends(c *config, log zerolog.Logger) error {
	for _, setup := range backendSetups {
		if err := setup(c, log); err != nil {
			return err
		}
	}
	return nil
}
