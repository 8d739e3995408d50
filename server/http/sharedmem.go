package httpfront

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/nereid-project/nereid/inference"
	"github.com/nereid-project/nereid/jsonw"
	"github.com/nereid-project/nereid/server/v2wire"
	"github.com/nereid-project/nereid/sharedmem"
)

// sharedMemory serves /v2/systemsharedmemory[/region/{r}]/(status|register|
// unregister) and the same under /v2/cudasharedmemory; the method has been
// checked.
func (s *Server) sharedMemory(ctx *fasthttp.RequestCtx, r route) {
	system := r.kind == routeSystemShm
	var err error
	switch r.action {
	case "status":
		buf := startJSON(ctx)
		if system {
			var st []sharedmem.Status
			if st, err = s.core.SystemSharedMemoryStatus(s.baseCtx, r.region); err == nil {
				buf = appendSystemShmStatus(buf, st)
			}
		} else {
			var st []sharedmem.CudaStatus
			if st, err = s.core.CudaSharedMemoryStatus(s.baseCtx, r.region); err == nil {
				buf = appendCudaShmStatus(buf, st)
			}
		}
		if err == nil {
			finishJSON(ctx, buf)
			return
		}
		ctx.Response.SwapBody(buf)
	case "register":
		if system {
			err = s.registerSystemShm(ctx, r.region)
		} else {
			err = s.registerCudaShm(ctx, r.region)
		}
	default: // unregister
		if system {
			err = s.core.UnregisterSystemSharedMemory(s.baseCtx, r.region)
		} else {
			err = s.core.UnregisterCudaSharedMemory(s.baseCtx, r.region)
		}
	}
	if err != nil {
		respondErr(ctx, err)
		return
	}
	ctx.SetContentType(contentTypeJSON)
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// registerSystemShm reads {"key": string, "offset": uint, "byte_size": uint}.
// A disabled core is asked first, so that it answers 501 whatever the body.
func (s *Server) registerSystemShm(ctx *fasthttp.RequestCtx, name string) error {
	var (
		key              string
		offset, byteSize uint64
		hasKey, hasSize  bool
	)
	r := v2wire.NewReader(ctx.PostBody())
	err := r.Object(func(k []byte) error {
		switch string(k) {
		case "key":
			if r.Peek() != '"' {
				return inference.InvalidArg("Unable to parse 'key': expected a string")
			}
			v, err := r.ReadString()
			key, hasKey = string(v), true
			return err
		case "offset":
			v, err := v2wire.ReadUint(&r)
			if err != nil {
				return inference.InvalidArg("Unable to parse 'offset': expected an unsigned integer")
			}
			offset = v
		case "byte_size":
			v, err := v2wire.ReadUint(&r)
			if err != nil {
				return inference.InvalidArg("Unable to parse 'byte_size': expected an unsigned integer")
			}
			byteSize, hasSize = v, true
		default:
			return r.SkipValue()
		}
		return nil
	})
	if err == nil {
		err = r.End()
	}
	if err == nil && !hasKey {
		err = inference.InvalidArg("Unable to parse 'key': the register request for shared memory region '%s' has no 'key'", name)
	}
	if err == nil && !hasSize {
		err = inference.InvalidArg("Unable to parse 'byte_size': the register request for shared memory region '%s' has no 'byte_size'", name)
	}
	if err != nil {
		return s.shmRefusal(err)
	}
	return s.core.RegisterSystemSharedMemory(s.baseCtx, name, key, offset, byteSize)
}

// registerCudaShm reads {"raw_handle": {"b64": string}, "device_id": int,
// "byte_size": uint}.
func (s *Server) registerCudaShm(ctx *fasthttp.RequestCtx, name string) error {
	var (
		handle   []byte
		deviceID int64
		byteSize uint64
	)
	r := v2wire.NewReader(ctx.PostBody())
	err := r.Object(func(k []byte) error {
		switch string(k) {
		case "raw_handle":
			if r.Peek() != '{' {
				return inference.InvalidArg("Unable to parse 'raw_handle': expected an object with 'b64'")
			}
			return r.Object(func(hk []byte) error {
				if string(hk) != "b64" {
					return r.SkipValue()
				}
				if r.Peek() != '"' {
					return inference.InvalidArg("Unable to parse 'b64': expected a string")
				}
				v, err := r.ReadString()
				if err != nil {
					return err
				}
				if handle, err = decodeBase64(v); err != nil {
					return inference.InvalidArg("Unable to parse 'b64': %v", err)
				}
				return nil
			})
		case "device_id":
			tok, isInt, err := r.ReadNumber()
			id, ok := v2wire.ParseInt(tok)
			if err != nil || !isInt || !ok {
				return inference.InvalidArg("Unable to parse 'device_id': expected an integer")
			}
			deviceID = id
		case "byte_size":
			v, err := v2wire.ReadUint(&r)
			if err != nil {
				return inference.InvalidArg("Unable to parse 'byte_size': expected an unsigned integer")
			}
			byteSize = v
		default:
			return r.SkipValue()
		}
		return nil
	})
	if err == nil {
		err = r.End()
	}
	if err != nil {
		return s.shmRefusal(err)
	}
	return s.core.RegisterCudaSharedMemory(s.baseCtx, name, handle, deviceID, byteSize)
}

// shmRefusal is the answer to a register request whose body does not
// parse: the core's refusal when client shared memory is disabled (501
// whatever the body, as Triton answers), else the parse error. A disabled
// core refuses every call, the status call included.
func (s *Server) shmRefusal(parseErr error) error {
	if _, err := s.core.SystemSharedMemoryStatus(s.baseCtx, ""); inference.CodeOf(err) == inference.CodeUnsupported {
		return err
	}
	return parseErr
}

// appendSystemShmStatus writes [{"name","key","offset","byte_size"}, ...].
func appendSystemShmStatus(dst []byte, st []sharedmem.Status) []byte {
	dst = append(dst, '[')
	for i, r := range st {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = jsonw.AppendString(dst, r.Name)
		dst = append(dst, `,"key":`...)
		dst = jsonw.AppendString(dst, r.Key)
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendUint(dst, r.Offset, 10)
		dst = append(dst, `,"byte_size":`...)
		dst = strconv.AppendUint(dst, r.ByteSize, 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendCudaShmStatus writes [{"name","device_id","byte_size"}, ...].
func appendCudaShmStatus(dst []byte, st []sharedmem.CudaStatus) []byte {
	dst = append(dst, '[')
	for i, r := range st {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst = jsonw.AppendString(dst, r.Name)
		dst = append(dst, `,"device_id":`...)
		dst = strconv.AppendInt(dst, r.DeviceID, 10)
		dst = append(dst, `,"byte_size":`...)
		dst = strconv.AppendUint(dst, r.ByteSize, 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}
