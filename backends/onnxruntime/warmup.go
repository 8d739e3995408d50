//go:build cgo

package onnxruntime

import (
	"context"

	"github.com/nereid-project/nereid/backends/warmup"
	"github.com/nereid-project/nereid/inference"
)

// warmUp runs the model_warmup samples (package warmup builds them, as for
// every backend) on the instance before it serves.
func (i *instance) warmUp(ctx context.Context) error {
	err := warmup.Run(ctx, i.m.name, i.m.warmup, func(ctx context.Context, batch []*inference.Request) error {
		_, err := i.Execute(ctx, batch)
		return err
	})
	if err == nil && len(i.m.warmup) > 0 {
		i.m.log.Debug().Int("samples", len(i.m.warmup)).Msg("instance warmed up")
	}
	return err
}
