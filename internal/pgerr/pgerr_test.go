package pgerr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/internal/pgerr"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		unavailable bool
	}{
		{"nil", nil, false},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"crash shutdown", &pgconn.PgError{Code: "57P02"}, true},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"raised exception", &pgconn.PgError{Code: "P0001"}, false},
		{"broken connection", fmt.Errorf("append: %w", io.ErrUnexpectedEOF), true},
		{"closed connection", pgconn.ErrConnClosed, true},
		{"deadline", context.DeadlineExceeded, true},
		{"other", errors.New("decode metadata"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pgerr.Classify(tc.err)
			if got := pgerr.Unavailable(tc.err); got != tc.unavailable {
				t.Fatalf("Unavailable = %v, want %v", got, tc.unavailable)
			}
			if got := errors.Is(err, domain.ErrDatabaseUnavailable); got != tc.unavailable {
				t.Fatalf("Classify(%v) = %v, marked unavailable %v, want %v", tc.err, err, got, tc.unavailable)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("Classify(%v) = %v, lost the cause", tc.err, err)
			}
			if tc.unavailable && domain.ErrorCode(err) != domain.EUNAVAILABLE {
				t.Fatalf("code %s, want %s", domain.ErrorCode(err), domain.EUNAVAILABLE)
			}
		})
	}
}
