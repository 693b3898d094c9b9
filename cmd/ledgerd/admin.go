package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/domain"
	"github.com/resolutionflow/ledgerd/httpapi"
	"github.com/resolutionflow/ledgerd/migrations"
	"github.com/resolutionflow/ledgerd/projections"
)

// openBackend parses the storage flags of the subcommand name from args
// and opens the backend they choose, applying pending migrations.
func openBackend(ctx context.Context, name string, args []string, logger *slog.Logger) (*backend, error) {
	f := newFlags(name)
	storage := addStorageFlags(f)
	masterKeyFile := addMasterKeyFlag(f)
	if err := f.parse(args); err != nil {
		return nil, err
	}
	b, _, err := storage.openKeyed(ctx, *masterKeyFile, logger)
	return b, err
}

// migrate applies pending migrations (opening the backend does it) and,
// with --runtime-role, grants that PostgreSQL role what serve needs.
func migrate(ctx context.Context, args []string, logger *slog.Logger) error {
	f := newFlags("migrate")
	storage := addStorageFlags(f)
	runtimeRole := f.string("runtime-role", "LEDGER_RUNTIME_ROLE", "", "PostgreSQL role that serve connects as: granted, after migrating, only what serve needs (SELECT and INSERT on events)")
	if err := f.parse(args); err != nil {
		return err
	}
	if *runtimeRole != "" && storage.embedded() {
		return errors.New("--runtime-role (LEDGER_RUNTIME_ROLE) applies to PostgreSQL only")
	}
	b, err := storage.open(ctx, logger)
	if err != nil {
		return err
	}
	defer b.close()
	logger.Info("migrations applied")
	if *runtimeRole == "" {
		return nil
	}
	if err := migrations.GrantRuntime(ctx, b.pool, *runtimeRole); err != nil {
		return err
	}
	logger.Info("runtime role granted", "role", *runtimeRole)
	return nil
}

// rebuild replays the whole log into fresh read models; events it cannot
// apply are skipped, recorded and logged, as the projector does. On a
// terminal, a progress line on stderr says how far it has got.
func rebuild(ctx context.Context, args []string, stderr io.Writer, logger *slog.Logger) error {
	b, err := openBackend(ctx, "projections rebuild", args, logger)
	if err != nil {
		return err
	}
	defer b.close()
	start := time.Now()
	var progress func(projections.RebuildProgress)
	if isTerminal(stderr) {
		var last time.Time
		progress = func(p projections.RebuildProgress) {
			if !p.Writing && time.Since(last) < 200*time.Millisecond {
				return
			}
			last = time.Now()
			fmt.Fprint(stderr, "\r\033[K"+rebuildProgressLine(p, last))
		}
	}
	err = projections.RebuildWithProgress(ctx, b.events, b.views, progress)
	if progress != nil {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	pos, err := b.views.Checkpoint(ctx, projections.HandoffsProjector)
	if err != nil {
		return err
	}
	skips, err := b.views.Skips(ctx, projections.HandoffsProjector)
	if err != nil {
		return err
	}
	logger.Info("read models rebuilt", "position", pos, "skipped_events", skips.Count, "took", time.Since(start).String())
	return nil
}

// rebuildProgressLine is a rebuild's progress as one line: the events read, the
// share of the log they are when its head is known, and the rate.
func rebuildProgressLine(p projections.RebuildProgress, now time.Time) string {
	line := fmt.Sprintf("rebuild: %d events read, position %d", p.Events, p.Position)
	if p.Head > 0 {
		line += fmt.Sprintf(" of %d (%d%%)", p.Head, min(100, p.Position*100/p.Head))
	}
	if secs := now.Sub(p.Started).Seconds(); secs > 0 {
		line += fmt.Sprintf(", %.0f events/s", float64(p.Events)/secs)
	}
	if p.Writing {
		line += "; writing the read models"
	}
	return line
}

// token prints a signed bearer token for development and scripts.
func token(_ context.Context, args []string, stdout io.Writer) error {
	f := newFlags("token")
	dataDir := f.string("data-dir", "LEDGER_DATA_DIR", defaultDataDir, "data directory of a server in the embedded mode, whose secret signs the token without --jwt-secret")
	secretFlag := addSecretFlags(f)
	user := f.string("user", "", "", "user id (random when omitted)")
	account := f.string("account", "", "", "account id (random when omitted)")
	team := f.string("team", "", "", "team id (random when omitted)")
	role := f.string("role", "", string(domain.RoleEngineer), "viewer, engineer, admin, owner or auditor")
	ttl := f.duration("ttl", "", time.Hour, "how long the token is valid")
	issuer := f.string("issuer", "LEDGER_JWT_ISSUER", "", "the token's iss claim (none when empty)")
	audience := f.string("audience", "LEDGER_JWT_AUDIENCE", "", "the token's aud claim (none when empty)")
	if err := f.parse(args); err != nil {
		return err
	}
	secret, err := tokenSecret(secretFlag, *dataDir)
	if err != nil {
		return err
	}
	actor := domain.Actor{}
	if actor.Role, err = domain.ParseRole(*role); err != nil {
		return fmt.Errorf("--role: %w", err)
	}
	if actor.UserID, err = parseOrNewID(*user); err != nil {
		return fmt.Errorf("--user: %w", err)
	}
	if actor.AccountID, err = parseOrNewID(*account); err != nil {
		return fmt.Errorf("--account: %w", err)
	}
	if actor.TeamID, err = parseOrNewID(*team); err != nil {
		return fmt.Errorf("--team: %w", err)
	}
	signed, err := signToken(secret, actor, *ttl, *issuer, *audience)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, signed)
	return err
}

// signToken signs a token for actor, valid for ttl, with the iss and aud
// claims when issuer and audience are not empty.
func signToken(secret string, actor domain.Actor, ttl time.Duration, issuer, audience string) (string, error) {
	var opts []httpapi.TokenOption
	if issuer != "" {
		opts = append(opts, httpapi.WithIssuer(issuer))
	}
	if audience != "" {
		opts = append(opts, httpapi.WithAudience(audience))
	}
	return httpapi.SignToken([]byte(secret), actor, ttl, opts...)
}

// tokenSecret returns the secret that signs a token: the one given by jwt,
// else the one an embedded-mode server keeps in dataDir. Unlike serve, it
// never makes one: a new secret would sign tokens no server accepts.
func tokenSecret(jwt valueOrFile, dataDir string) (string, error) {
	if secret, err := givenSecret(jwt); err != nil || secret != "" {
		return secret, err
	}
	secret, err := readKeptSecret(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no JWT secret in --data-dir %s: start `ledgerd serve` there first (the embedded mode makes it), or give --jwt-secret-file (LEDGER_JWT_SECRET_FILE)", dataDir)
	}
	return secret, err
}

// parseOrNewID parses the id s, or makes a random one when s is empty.
func parseOrNewID(s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.New(), nil
	}
	return uuid.Parse(s)
}
