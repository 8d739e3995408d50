package sagemaker_test

import (
	"github.com/nereid-project/nereid/server"
	"github.com/nereid-project/nereid/server/sagemaker"
)

var _ sagemaker.Core = (*server.Server)(nil)
