package asyncinfer_test

import (
	"github.com/nereid-project/nereid/asyncinfer"
	"github.com/nereid-project/nereid/server"
)

var _ asyncinfer.Core = (*server.Server)(nil)
