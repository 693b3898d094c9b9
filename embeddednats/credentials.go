package embeddednats

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/resolutionflow/ledgerd/internal/privatefile"
)

// The server's users. Anonymous clients are refused.
const (
	// User is the ledger's own user, the relay's: it may do anything, and
	// it alone may publish on handoff.>.
	User = "ledger"
	// ReaderUser may read the streams (stream information, messages,
	// consumers of its own) and publish nothing else.
	ReaderUser = "reader"
)

// Files, in the data directory, holding each user's client URL with its
// password: nats://user:password@host:port.
const (
	URLFile       = "nats-url"
	ReaderURLFile = "nats-reader-url"
)

// passwordBytes is how many random bytes a new password holds.
const passwordBytes = 32

// readerPublish are the only subjects ReaderUser may publish on: the
// JetStream API requests that read a stream and manage consumers, and
// consumers' acknowledgements and flow control.
var readerPublish = []string{
	"$JS.API.INFO",
	"$JS.API.STREAM.NAMES",
	"$JS.API.STREAM.LIST",
	"$JS.API.STREAM.INFO.*",
	"$JS.API.STREAM.MSG.GET.*",
	"$JS.API.DIRECT.GET.>",
	"$JS.API.CONSUMER.>",
	"$JS.ACK.>",
	"$JS.FC.>",
}

// users returns the server's users with their passwords.
func users(ledger, reader string) []*server.User {
	return []*server.User{
		{Username: User, Password: ledger},
		{Username: ReaderUser, Password: reader, Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: readerPublish},
		}},
	}
}

// ReadClientURL returns the client URL kept in the file name of dataDir
// (URLFile or ReaderURLFile), credentials included. The error wraps
// fs.ErrNotExist when there is none.
func ReadClientURL(dataDir, name string) (string, error) {
	path := filepath.Join(dataDir, name)
	kept, err := privatefile.Read(path)
	var exposed *privatefile.ExposedError
	switch {
	case errors.As(err, &exposed):
		return "", fmt.Errorf("NATS URL file %v, so its password may be known: delete it to make new credentials, or run chmod 600 %s", exposed, path)
	case err != nil:
		return "", fmt.Errorf("read NATS URL: %w", err)
	}
	return kept, nil
}

// password returns the password of user kept in the URL file name of
// dataDir, or a new random one when there is none.
func password(dataDir, name, user string) (string, error) {
	kept, err := ReadClientURL(dataDir, name)
	if errors.Is(err, fs.ErrNotExist) {
		return newPassword()
	}
	if err != nil {
		return "", err
	}
	u, err := url.Parse(kept)
	if err != nil || u.User == nil || u.User.Username() != user {
		return "", fmt.Errorf("NATS URL file %s does not hold a URL of user %s: delete it to make new credentials",
			filepath.Join(dataDir, name), user)
	}
	pass, _ := u.User.Password()
	if len(pass) < 2*passwordBytes {
		return "", fmt.Errorf("NATS URL file %s holds a password shorter than %d characters: delete it to make new credentials",
			filepath.Join(dataDir, name), 2*passwordBytes)
	}
	return pass, nil
}

// newPassword returns passwordBytes random bytes, hex-encoded.
func newPassword() (string, error) {
	key := make([]byte, passwordBytes)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("make NATS password: %w", err)
	}
	return hex.EncodeToString(key), nil
}

// writeClientURL writes the client URL of user to the file name of
// dataDir, mode 0600, unless the file holds it already. The file is
// written in full under a temporary name and then renamed into place.
func writeClientURL(dataDir, name, address, user, pass string) error {
	u := url.URL{Scheme: "nats", User: url.UserPassword(user, pass), Host: address}
	if kept, err := ReadClientURL(dataDir, name); err == nil && kept == u.String() {
		return nil
	}
	if err := privatefile.Write(filepath.Join(dataDir, name), u.String(), true); err != nil {
		return fmt.Errorf("write NATS URL: %w", err)
	}
	return nil
}
