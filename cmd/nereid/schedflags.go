package main

import (
	"flag"

	"github.com/nereid-project/nereid/cache"
	"github.com/nereid-project/nereid/ratelimit"
)

// schedulingConfig holds the rate limiter and response cache flags.
type schedulingConfig struct {
	rateLimit ratelimit.Options
	cache     cache.Config

	mode          string
	resources     stringList
	cacheConfig   stringList
	legacyCacheSz int64
}

func (s *schedulingConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&s.mode, "rate-limit", "off", "rate limiting of model executions: off or execution_count (instance_group rate_limiter resources and priority)")
	fs.Var(&s.resources, "rate-limit-resource", "<name>:<count>[:<device>] copies of a rate limiter resource (repeatable)")
	fs.Var(&s.cacheConfig, "cache-config", "response cache setting <cache>,<key>=<value>, e.g. local,size=1048576 (repeatable)")
	fs.Int64Var(&s.legacyCacheSz, "response-cache-byte-size", 0, "deprecated: size of the local response cache in bytes (use --cache-config local,size=N)")
}

// finish validates the flags once they are parsed.
func (s *schedulingConfig) finish() error {
	mode, err := ratelimit.ParseMode(s.mode)
	if err != nil {
		return err
	}
	s.rateLimit.Mode = mode
	for _, v := range s.resources {
		r, err := ratelimit.ParseResource(v)
		if err != nil {
			return err
		}
		s.rateLimit.Resources = append(s.rateLimit.Resources, r)
	}
	s.cache, err = cache.ParseConfig(s.cacheConfig, s.legacyCacheSz)
	return err
}

// newCache returns the response cache the flags ask for, or nil.
func (s *schedulingConfig) newCache() *cache.Local {
	if s.cache.Size <= 0 {
		return nil
	}
	return cache.NewLocal(s.cache.Size)
}
