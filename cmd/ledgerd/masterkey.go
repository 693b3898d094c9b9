package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/resolutionflow/ledgerd/internal/privatefile"
	"github.com/resolutionflow/ledgerd/shred"
)

// masterKeyFile is the name, in the data directory, of the master key the
// embedded mode makes on its first start.
const masterKeyFile = "master-key"

// addMasterKeyFlag adds --master-key-file.
func addMasterKeyFlag(f *flags) *string {
	return f.string("master-key-file", "LEDGER_MASTER_KEY_FILE", "", "file holding the master key (64 hex digits: openssl rand -hex 32) that wraps the data keys of the sessions' personal data; embedded mode: the one kept in --data-dir when empty")
}

// openLedgerKeyed opens a ledger that exists already (requireLedger) as
// openKeyed does, for the commands that read its sealed notes.
func (s storageFlags) openLedgerKeyed(ctx context.Context, file string, logger *slog.Logger) (*backend, *shred.Keyring, error) {
	if err := s.requireLedger(); err != nil {
		return nil, nil, err
	}
	return s.openKeyed(ctx, file, logger)
}

// openKeyed opens the backend with its readers seeing the log opened by
// the master key (file, or in the embedded mode the one kept in the data
// directory): see masterKey.
func (s storageFlags) openKeyed(ctx context.Context, file string, logger *slog.Logger) (*backend, *shred.Keyring, error) {
	b, err := s.open(ctx, logger)
	if err != nil {
		return nil, nil, err
	}
	keys, err := s.masterKey(ctx, b, file, logger)
	if err != nil {
		b.close()
		return nil, nil, err
	}
	if err := shred.CheckMasterKey(ctx, b.keys, keys); err != nil {
		b.close()
		return nil, nil, err
	}
	b.withKeys(keys)
	return b, keys, nil
}

// masterKey returns the keyring of the master key: the one in file, or in
// the embedded mode the one kept in the data directory, made on first use
// (mode 0600) while the database holds no data key. A missing file is
// never replaced by a new key when data keys exist: they would all be
// lost; that is an error saying so, and so is a master key that does not
// wrap the data keys the database holds (openKeyed checks).
func (s storageFlags) masterKey(ctx context.Context, b *backend, file string, logger *slog.Logger) (*shred.Keyring, error) {
	var (
		text string
		err  error
	)
	switch {
	case file != "":
		text, err = readValueFile(file)
		if err != nil {
			return nil, fmt.Errorf("--master-key-file (LEDGER_MASTER_KEY_FILE): %w; without it the sessions' notes cannot be read: restore the file from where you keep its copy", err)
		}
	case s.embedded():
		text, err = s.keptMasterKey(ctx, b, logger)
		if err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("--master-key-file (LEDGER_MASTER_KEY_FILE) is required with PostgreSQL: make the key once with `openssl rand -hex 32 > master-key`, keep it private, keep a copy apart from the database's backups, and give every server the same file")
	}
	m, err := shred.ParseMasterKey(text)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return shred.NewKeyring(m), nil
}

// keptMasterKey returns the master key kept in the data directory, making
// it when there is none and the database holds no data key.
func (s storageFlags) keptMasterKey(ctx context.Context, b *backend, logger *slog.Logger) (string, error) {
	dir := *s.dataDir
	if err := checkDataDir(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, masterKeyFile)
	text, err := privatefile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		ids, countErr := b.keys.MasterKeyIDs(ctx)
		if countErr != nil {
			return "", countErr
		}
		var n int64
		for _, c := range ids {
			n += c
		}
		if n > 0 {
			return "", fmt.Errorf("the master key file %s is missing, but the database holds %d data keys it wrapped: restore the file (or give it with --master-key-file); "+
				"a new key would make every session's notes unreadable, so none is made", path, n)
		}
		made, genErr := shred.NewMasterKey()
		if genErr != nil {
			return "", genErr
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create data directory: %w", err)
		}
		if err := privatefile.Write(path, made, false); err != nil {
			return "", fmt.Errorf("write master key: %w", err)
		}
		logger.Info("made a master key for the sessions' personal data; keep a copy apart from the data directory's backups", "file", path)
		text, err = privatefile.Read(path)
	}
	var exposed *privatefile.ExposedError
	switch {
	case errors.As(err, &exposed):
		return "", fmt.Errorf("master key %v; run chmod 600 %s", exposed, path)
	case err != nil:
		return "", fmt.Errorf("read master key: %w", err)
	}
	return text, nil
}
