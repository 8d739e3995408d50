package httpfront_test

import (
	"github.com/nereid-project/nereid/server"
	httpfront "github.com/nereid-project/nereid/server/http"
)

var _ httpfront.Core = (*server.Server)(nil)
