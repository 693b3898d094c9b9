package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/resolutionflow/ledgerd/console"
	"github.com/resolutionflow/ledgerd/domain"
)

// withConsole serves the web console under /console/ and the API
// everywhere else.
func withConsole(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, console.Handler())
	mux.Handle("/", api)
	return mux
}

// consoleCommand is `ledgerd console`: it prints a link that opens the web
// console signed in, for development. The token is in the link's fragment,
// which the browser keeps to itself. Unless told otherwise, every link of
// one data directory is for the same account and team (ids derived from
// its secret), so that two links, say an engineer's and an admin's, see
// the same queue; each link is for a new user.
func consoleCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("console")
	dataDir := f.string("data-dir", "LEDGER_DATA_DIR", defaultDataDir, "data directory of a server in the embedded mode, whose secret signs the token without --jwt-secret")
	secretFlag := addSecretFlags(f)
	addr := f.string("http-addr", "LEDGER_HTTP_ADDR", ":8080", "address the server's API listens on")
	role := f.string("role", "", string(domain.RoleEngineer), "viewer, engineer, admin, owner or auditor")
	user := f.string("user", "", "", "user id (random when omitted)")
	account := f.string("account", "", "", "account id (when omitted, the same for every link of this secret)")
	team := f.string("team", "", "", "team id (when omitted, the same for every link of this secret)")
	ttl := f.duration("ttl", "", 8*time.Hour, "how long the link's token is valid")
	issuer := f.string("issuer", "LEDGER_JWT_ISSUER", "", "the token's iss claim (none when empty)")
	audience := f.string("audience", "LEDGER_JWT_AUDIENCE", "", "the token's aud claim (none when empty)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := checkAddr("http-addr", "LEDGER_HTTP_ADDR", *addr); err != nil {
		return err
	}
	secret, err := tokenSecret(secretFlag, *dataDir)
	if err != nil {
		return err
	}
	actor := domain.Actor{}
	if actor.Role, err = domain.ParseRole(*role); err != nil {
		return usageErrorf("--role: %v", err)
	}
	for _, id := range []struct {
		flag  string
		value string
		into  *uuid.UUID
	}{{"user", *user, &actor.UserID}, {"account", *account, &actor.AccountID}, {"team", *team, &actor.TeamID}} {
		switch {
		case id.value != "":
			if *id.into, err = uuid.Parse(id.value); err != nil || *id.into == uuid.Nil {
				return usageErrorf("--%s must be a UUID", id.flag)
			}
		case id.flag == "user":
			*id.into = uuid.New()
		default:
			*id.into = derivedID(secret, id.flag)
		}
	}
	signed, err := signToken(secret, actor, *ttl, *issuer, *audience)
	if err != nil {
		return err
	}
	base := "http://" + browserHost(*addr)
	fmt.Fprintf(stderr, "console for role %s: user %s, account %s, team %s (valid %s)\n", actor.Role, actor.UserID, actor.AccountID, actor.TeamID, *ttl)
	if err := probe(ctx, base); err != nil {
		fmt.Fprintf(stderr, "note: no ledgerd answers at %s yet (%v): start `ledgerd serve` first\n", base, err)
	}
	_, err = fmt.Fprintf(stdout, "%s%s#token=%s\n", base, console.Prefix, url.QueryEscape(signed))
	return err
}

// derivedID is a UUID (version 4 layout) derived from the secret for a
// purpose: the same for every link of one secret, and telling nothing of
// the secret.
func derivedID(secret, purpose string) uuid.UUID {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("ledgerd console development " + purpose))
	var id uuid.UUID
	copy(id[:], m.Sum(nil))
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// browserHost is the host a browser on this machine reaches a listen
// address at: localhost for an unspecified host.
func browserHost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// probe checks, within a second, that a ledgerd answers at base.
func probe(ctx context.Context, base string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %d", res.StatusCode)
	}
	return nil
}
