package grant_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/grant"
)

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  *grant.Error
		want string
	}{
		{&grant.Error{Op: grant.OpRefresh, StatusCode: 400, Code: "invalid_grant", Description: "refresh token expired", Permanent: true},
			"grant: refresh: HTTP 400: invalid_grant: refresh token expired"},
		{&grant.Error{Op: grant.OpObtain, StatusCode: 503, RetryAfter: 30 * time.Second},
			"grant: obtain: HTTP 503 Service Unavailable (retry after 30s)"},
		{&grant.Error{Op: grant.OpObtain, StatusCode: 200, Err: errors.New("the response body is empty")},
			"grant: obtain: HTTP 200: the response body is empty"},
		{&grant.Error{Op: grant.OpObtain, Err: context.DeadlineExceeded},
			"grant: obtain: context deadline exceeded"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestIsPermanentAndRetryAfter(t *testing.T) {
	perm := &grant.Error{Op: grant.OpRefresh, StatusCode: 400, Code: "invalid_grant", Permanent: true}
	trans := &grant.Error{Op: grant.OpRefresh, StatusCode: 429, RetryAfter: 5 * time.Second, Err: context.DeadlineExceeded}
	wrapped := fmt.Errorf("refresh acme/api: %w", trans)
	for _, tc := range []struct {
		err        error
		permanent  bool
		retryAfter time.Duration
	}{
		{nil, false, 0},
		{errors.New("other"), false, 0},
		{perm, true, 0},
		{fmt.Errorf("x: %w", perm), true, 0},
		{trans, false, 5 * time.Second},
		{wrapped, false, 5 * time.Second},
	} {
		if got := grant.IsPermanent(tc.err); got != tc.permanent {
			t.Errorf("IsPermanent(%v) = %v", tc.err, got)
		}
		if got := grant.RetryAfter(tc.err); got != tc.retryAfter {
			t.Errorf("RetryAfter(%v) = %v", tc.err, got)
		}
	}
	if !errors.Is(wrapped, context.DeadlineExceeded) {
		t.Error("Err is not reachable through Unwrap")
	}
}
