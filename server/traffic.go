package server

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/traffic"
)

// shadowTimeout bounds a mirrored request.
const shadowTimeout = 30 * time.Second

// serveRouted runs a request on the variant d picked and, when d mirrors
// it, the same request on the shadow candidate afterwards, whose response
// is compared with the primary's and dropped. Variants are not routed
// again. A request with shared-memory tensors, or a stream, is not
// mirrored.
func (s *Server) serveRouted(ctx context.Context, req *inference.Request, out inference.ResponseFunc, d *traffic.Decision) (*inference.Response, error) {
	var mirror *inference.Request
	if model, version, ok := d.Mirror(); ok && out == nil && !usesSharedMemory(req) {
		mirror = copyRequest(req)
		mirror.ModelName, mirror.ModelVersion = model, version
	}
	req.ModelName, req.ModelVersion = d.Target()
	resp, err := s.serveModel(ctx, req, out)
	d.Done(err)
	if mirror != nil && err == nil {
		primary := copyOutputs(resp)
		s.opts.Traffic.Shadow(d, primary, func() (*inference.Response, error) {
			sctx, cancel := context.WithTimeout(context.Background(), shadowTimeout)
			defer cancel()
			return s.serveModel(sctx, mirror, nil)
		})
	}
	return resp, err
}

func usesSharedMemory(req *inference.Request) bool {
	for _, t := range req.Inputs {
		if _, ok := t.Parameters[paramShmRegion]; ok {
			return true
		}
	}
	for _, o := range req.Outputs {
		if _, ok := o.Parameters[paramShmRegion]; ok {
			return true
		}
	}
	return false
}

// copyRequest copies what a request carries: its tensors' bytes alias the
// client's message, which is gone once the primary has answered.
func copyRequest(req *inference.Request) *inference.Request {
	c := &inference.Request{
		ID: req.ID, ModelName: req.ModelName, ModelVersion: req.ModelVersion,
		Parameters: maps.Clone(req.Parameters),
	}
	for _, t := range req.Inputs {
		c.Inputs = append(c.Inputs, inference.Tensor{
			Name: t.Name, DataType: t.DataType, Shape: slices.Clone(t.Shape),
			Data: slices.Clone(t.Data), Parameters: maps.Clone(t.Parameters),
		})
	}
	for _, o := range req.Outputs {
		c.Outputs = append(c.Outputs, inference.RequestedOutput{Name: o.Name, Parameters: maps.Clone(o.Parameters)})
	}
	return c
}

// copyOutputs copies a response's outputs, which the front end releases
// once written.
func copyOutputs(resp *inference.Response) *inference.Response {
	c := &inference.Response{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion}
	for _, t := range resp.Outputs {
		c.Outputs = append(c.Outputs, inference.Tensor{
			Name: t.Name, DataType: t.DataType, Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data),
		})
	}
	return c
}
