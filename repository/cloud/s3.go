package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/nereid-project/nereid/inference"
)

// defaultRegion is the region requests go to when neither the
// environment nor the AWS config file names one, as Triton's.
const defaultRegion = "us-east-1"

// Network timeouts of the S3 client: a store that does not answer fails
// the sync instead of holding the poll. A download itself has no overall
// deadline (model files are large); a stalled one ends with the context.
const (
	dialTimeout           = 10 * time.Second
	responseHeaderTimeout = 30 * time.Second
	idleConnTimeout       = 30 * time.Second
)

// S3 is a Store over the S3 protocol, through the AWS SDK for Go. The
// credentials and region come from where the AWS tools look for them: the
// AWS_* environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION, AWS_PROFILE), the
// ~/.aws/credentials and ~/.aws/config files, web identity tokens, and
// the container or instance role.
type S3 struct {
	url    URL
	client *s3.Client
	creds  aws.CredentialsProvider // nil when no source of credentials was found
	conns  *connTracker
}

var _ Store = (*S3)(nil)

// S3Options are the test seams of NewS3; the zero value is production.
type S3Options struct {
	// ConfigFiles and CredentialsFiles, when set, replace the AWS shared
	// config and credentials files.
	ConfigFiles, CredentialsFiles []string
}

// NewS3 returns the store of an s3:// URL. It reads the AWS configuration
// but does not contact the store: credentials are looked up, and the
// bucket reached, by the first List.
func NewS3(ctx context.Context, u URL, opts S3Options) (*S3, error) {
	if u.Scheme != SchemeS3 {
		return nil, inference.InvalidArg("'%s' is not an s3:// URL", u)
	}
	conns := &connTracker{dialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, open: map[*trackedConn]struct{}{}}
	// A BuildableClient, which the SDK can give a custom CA bundle
	// (AWS_CA_BUNDLE); its transports are copies, so the connections are
	// tracked where they are dialled.
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.DialContext = conns.dial
		tr.TLSHandshakeTimeout = dialTimeout
		tr.ResponseHeaderTimeout = responseHeaderTimeout
		tr.IdleConnTimeout = idleConnTimeout
		tr.MaxIdleConnsPerHost = fetchWorkers
	})
	load := []func(*config.LoadOptions) error{
		config.WithHTTPClient(hc),
		config.WithLogger(logging.Nop{}),
	}
	if opts.ConfigFiles != nil {
		load = append(load, config.WithSharedConfigFiles(opts.ConfigFiles))
	}
	if opts.CredentialsFiles != nil {
		load = append(load, config.WithSharedCredentialsFiles(opts.CredentialsFiles))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, inference.InvalidArg("model repository '%s': cannot read the AWS configuration: %w", u, err)
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.DisableLogOutputChecksumValidationSkipped = true
		if u.Endpoint != "" {
			// S3-protocol servers (MinIO, Ceph, …) address buckets by path.
			o.BaseEndpoint = aws.String(u.Endpoint)
			o.UsePathStyle = true
		}
	})
	return &S3{url: u, client: client, creds: cfg.Credentials, conns: conns}, nil
}

// Close closes the client's connections; the store must not be used
// after.
func (s *S3) Close() { s.conns.closeAll() }

// connTracker dials the client's connections and closes those still open
// at Close, which ends the transport's goroutines for them.
type connTracker struct {
	dialer *net.Dialer
	mu     sync.Mutex // guards open
	open   map[*trackedConn]struct{}
}

func (c *connTracker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := c.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: conn, owner: c}
	c.mu.Lock()
	c.open[tc] = struct{}{}
	c.mu.Unlock()
	return tc, nil
}

func (c *connTracker) closeAll() {
	c.mu.Lock()
	open := make([]*trackedConn, 0, len(c.open))
	for tc := range c.open {
		open = append(open, tc)
	}
	c.mu.Unlock()
	for _, tc := range open {
		tc.Close()
	}
}

type trackedConn struct {
	net.Conn
	owner *connTracker
	once  sync.Once
}

func (tc *trackedConn) Close() error {
	tc.once.Do(func() {
		tc.owner.mu.Lock()
		delete(tc.owner.open, tc)
		tc.owner.mu.Unlock()
	})
	return tc.Conn.Close()
}

// List lists the objects under prefix, page by page.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	// The credentials first (the SDK caches them): their failure is the
	// most common one and the SDK's own text buries it.
	if s.creds == nil {
		return nil, s.noCredentials(errors.New("no credential source configured"))
	}
	if _, err := s.creds.Retrieve(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, s.fail("list", "", err)
		}
		return nil, s.noCredentials(err)
	}
	var out []Object
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.url.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.fail("list", "", err)
		}
		for _, o := range page.Contents {
			obj := Object{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: aws.ToString(o.ETag)}
			if o.LastModified != nil {
				obj.Modified = *o.LastModified
			}
			out = append(out, obj)
		}
		if len(out) > maxObjects {
			return nil, inference.InvalidArg("model repository '%s' has more than the %d objects Nereid copies", s.url, maxObjects)
		}
	}
	return out, nil
}

// Fetch downloads one object into w.
func (s *S3) Fetch(ctx context.Context, key string, w io.Writer) (Object, error) {
	resp, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.url.Bucket), Key: aws.String(key)})
	if err != nil {
		return Object{}, s.fail("fetch", key, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return Object{}, s.fail("fetch", key, err)
	}
	obj := Object{Key: key, Size: -1, ETag: aws.ToString(resp.ETag)}
	if resp.ContentLength != nil {
		obj.Size = *resp.ContentLength
	}
	if resp.LastModified != nil {
		obj.Modified = *resp.LastModified
	}
	return obj, nil
}

func (s *S3) noCredentials(err error) error {
	return inference.Unavailable("model repository '%s': no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "+
		"or a profile in ~/.aws/credentials (AWS_PROFILE), or run with a web identity or instance role: %w", s.url, err)
}

// fail turns an SDK error into an inference error that says, first, what
// went wrong in words a user can act on, then the SDK's own text.
func (s *S3) fail(op, key string, err error) error {
	where := fmt.Sprintf("model repository '%s'", s.url)
	if key != "" {
		where += fmt.Sprintf(", object '%s'", clip(key))
	}
	endpoint := s.url.Endpoint
	if endpoint == "" {
		endpoint = "the AWS S3 endpoint"
	}
	var (
		signing *v4.SigningError
		api     smithy.APIError
		opErr   *net.OpError
		dnsErr  *net.DNSError
	)
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return inference.Errorf(inference.CodeCancelled, "%s: %s stopped: %w", where, op, err)
	case errors.As(err, &signing):
		return s.noCredentials(err)
	case errors.As(err, &api):
		switch api.ErrorCode() {
		case "NoSuchBucket":
			return inference.NotFound("%s: bucket '%s' does not exist: %w", where, s.url.Bucket, err)
		case "NoSuchKey", "NotFound":
			return inference.NotFound("%s: the object is gone (deleted after it was listed?): %w", where, err)
		case "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken":
			return inference.Unavailable("%s: the store refused the credentials (%s): %w", where, api.ErrorCode(), err)
		}
		return inference.Unavailable("%s: %s failed: %w", where, op, err)
	case errors.As(err, &dnsErr) || errors.As(err, &opErr):
		return inference.Unavailable("%s: cannot reach %s: %w", where, endpoint, err)
	}
	return inference.Unavailable("%s: %s failed: %w", where, op, err)
}
